-- The room check becomes part of the commit, and invoicing an offer becomes a state of its own.

-- Under the blob's lock and with the account row locked: refuse blocked content; for a new owner,
-- refuse (SQLSTATE SA402, the shortfall in byte-seconds as DETAIL) unless everything the account then
-- stores fits the free allowance or the credit left covers p_min_prepaid seconds of its billable bytes
-- (the rule of satellite.billing.policy); then record the blob, the file and the storage total, with the
-- meter advanced first. A refusal raises, so the whole call is rolled back: nothing is created.
DROP FUNCTION commit_upload(text, text, bigint, text, text, text, integer, bytea, text, text, text,
    timestamptz, bigint);

CREATE FUNCTION commit_upload(
    p_pubkey text, p_sha256 text, p_size bigint, p_type text, p_ext text, p_infohash text,
    p_piece_length integer, p_pieces bytea, p_name text, p_default_name text, p_label text,
    p_now timestamptz, p_free bigint, p_min_prepaid bigint
) RETURNS TABLE (
    blocked boolean, blob_created boolean, new_owner boolean, sha256 text, name text, label text,
    created_at timestamptz, size bigint, type text, ext text, infohash text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_account accounts%ROWTYPE;
    v_blob_created boolean;
    v_new_owner boolean;
    v_usage numeric;
    v_billable bigint;
    v_shortfall numeric;
BEGIN
    PERFORM pg_advisory_xact_lock(blob_lock_key(p_sha256));
    IF EXISTS (SELECT 1 FROM blocklist WHERE kind = 'sha256' AND value = p_sha256) THEN
        RETURN QUERY SELECT true, false, false, p_sha256, NULL::text, NULL::text, NULL::timestamptz,
            NULL::bigint, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    INSERT INTO accounts (pubkey, usage_updated_at, created_at) VALUES (p_pubkey, p_now, p_now)
    ON CONFLICT (pubkey) DO NOTHING;
    SELECT * INTO v_account FROM accounts a WHERE a.pubkey = p_pubkey FOR UPDATE;
    v_new_owner := NOT EXISTS (SELECT 1 FROM files f WHERE f.pubkey = p_pubkey AND f.sha256 = p_sha256);
    IF v_new_owner THEN
        v_usage := advanced_usage(v_account.usage_byte_seconds, v_account.storage_bytes,
            v_account.usage_updated_at, p_now, p_free);
        v_billable := GREATEST(v_account.storage_bytes + p_size - p_free, 0);
        v_shortfall := v_billable::numeric * p_min_prepaid - (v_account.credit_byte_seconds - v_usage);
        IF v_billable > 0 AND v_shortfall > 0 THEN
            RAISE EXCEPTION 'not enough storage credit' USING ERRCODE = 'SA402', DETAIL = v_shortfall::text;
        END IF;
    END IF;
    INSERT INTO blobs (sha256, size, type, ext, infohash, piece_length, pieces, created_at)
    VALUES (p_sha256, p_size, p_type, p_ext, p_infohash, p_piece_length, p_pieces, p_now)
    ON CONFLICT (sha256) DO NOTHING;
    v_blob_created := FOUND;
    INSERT INTO files (pubkey, sha256, name, label, created_at)
    VALUES (p_pubkey, p_sha256, COALESCE(p_name, p_default_name), p_label, p_now)
    ON CONFLICT (pubkey, sha256) DO UPDATE
        SET name = COALESCE(p_name, files.name), label = COALESCE(p_label, files.label);
    IF v_new_owner THEN
        UPDATE accounts a SET
            usage_byte_seconds = v_usage,
            usage_updated_at = GREATEST(a.usage_updated_at, p_now),
            storage_bytes = a.storage_bytes + p_size
        WHERE a.pubkey = p_pubkey;
    END IF;
    RETURN QUERY
        SELECT false, v_blob_created, v_new_owner, f.sha256, f.name, f.label, f.created_at,
               b.size, b.type, b.ext, b.infohash
        FROM files f JOIN blobs b ON b.sha256 = f.sha256
        WHERE f.pubkey = p_pubkey AND f.sha256 = p_sha256;
END
$$;

-- Invoicing: a callback claims the offer (offered -> invoicing) before it calls the Lightning node, with
-- no transaction open, and records the invoice (invoicing -> invoiced) or gives the offer back after.
ALTER TABLE offers DROP CONSTRAINT offers_status_check;
ALTER TABLE offers ADD CONSTRAINT offers_status_check
    CHECK (status IN ('offered', 'invoicing', 'invoiced', 'paid', 'underpaid', 'expired'));
ALTER TABLE offers ADD COLUMN invoicing_at timestamptz;
DROP INDEX offers_open;
CREATE INDEX offers_open ON offers (expires_at) WHERE status IN ('offered', 'invoicing', 'invoiced');
