-- One round trip to commit an upload, and one definition each of the meter rule and the blob lock.

-- usage + billable bytes x elapsed seconds (exact NUMERIC); never backwards.
-- The same rule as satellite.billing.metering.advance.
CREATE FUNCTION advanced_usage(usage numeric, stored bigint, since timestamptz, now timestamptz, free bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT usage + GREATEST(stored - free, 0) * GREATEST(0, EXTRACT(EPOCH FROM (now - since)))
$$;

-- The advisory lock id of a blob: its hash's first 64 bits.
CREATE FUNCTION blob_lock_key(sha256 text) RETURNS bigint LANGUAGE sql IMMUTABLE AS $$
    SELECT ('x' || substr(sha256, 1, 16))::bit(64)::bigint
$$;

-- Under the blob's lock: refuse blocked content, record the blob, give the owner the file (a given name
-- or label replaces the stored one), count a new owner's bytes with the meter advanced first.
CREATE FUNCTION commit_upload(
    p_pubkey text, p_sha256 text, p_size bigint, p_type text, p_ext text, p_infohash text,
    p_piece_length integer, p_pieces bytea, p_name text, p_default_name text, p_label text,
    p_now timestamptz, p_free bigint
) RETURNS TABLE (
    blocked boolean, blob_created boolean, new_owner boolean, sha256 text, name text, label text,
    created_at timestamptz, size bigint, type text, ext text, infohash text
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_blob_created boolean;
    v_new_owner boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(blob_lock_key(p_sha256));
    IF EXISTS (SELECT 1 FROM blocklist WHERE kind = 'sha256' AND value = p_sha256) THEN
        RETURN QUERY SELECT true, false, false, p_sha256, NULL::text, NULL::text, NULL::timestamptz,
            NULL::bigint, NULL::text, NULL::text, NULL::text;
        RETURN;
    END IF;
    INSERT INTO blobs (sha256, size, type, ext, infohash, piece_length, pieces, created_at)
    VALUES (p_sha256, p_size, p_type, p_ext, p_infohash, p_piece_length, p_pieces, p_now)
    ON CONFLICT (sha256) DO NOTHING;
    v_blob_created := FOUND;
    INSERT INTO accounts (pubkey, usage_updated_at, created_at) VALUES (p_pubkey, p_now, p_now)
    ON CONFLICT (pubkey) DO NOTHING;
    INSERT INTO files (pubkey, sha256, name, label, created_at)
    VALUES (p_pubkey, p_sha256, COALESCE(p_name, p_default_name), p_label, p_now)
    ON CONFLICT (pubkey, sha256) DO UPDATE
        SET name = COALESCE(p_name, files.name), label = COALESCE(p_label, files.label)
    RETURNING (xmax = 0) INTO v_new_owner;
    IF v_new_owner THEN
        UPDATE accounts a SET
            usage_byte_seconds = advanced_usage(a.usage_byte_seconds, a.storage_bytes, a.usage_updated_at, p_now, p_free),
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
