-- What the operator commands need: credit granted or refunded by hand, reports users file, the exchange
-- rate of each sale, when an account's credit ran out, and blocked accounts refused by the data itself.

-- Sats per USD the offer was priced at, so revenue can be told in USD at the rate of each sale.
ALTER TABLE offers ADD COLUMN sats_per_usd numeric CHECK (sats_per_usd > 0);

-- Credit an operator granted (positive) or refunded (negative), with the reason the account is shown.
CREATE TABLE credit_grants (
    id           bigserial PRIMARY KEY,
    pubkey       text NOT NULL REFERENCES accounts (pubkey),
    byte_seconds numeric NOT NULL CHECK (byte_seconds <> 0),
    reason       text NOT NULL CHECK (btrim(reason) <> ''),
    operator     text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL
);
CREATE INDEX credit_grants_by_pubkey ON credit_grants (pubkey, created_at);

-- Reports users file about content or accounts (NIP-56 kind 1984, BUD-09): one row per report event
-- and target it names. Open until an operator resolves it (blocks the target, or dismisses the report).
CREATE TABLE reports (
    event_id    text NOT NULL CHECK (event_id ~ '^[0-9a-f]{64}$'),
    target_kind text NOT NULL CHECK (target_kind IN ('sha256', 'pubkey')),
    target      text NOT NULL CHECK (target ~ '^[0-9a-f]{64}$'),
    reporter    text NOT NULL CHECK (reporter ~ '^[0-9a-f]{64}$'),
    -- NIP-56 report types: nudity, malware, profanity, illegal, spam, impersonation, other
    report_type text NOT NULL DEFAULT 'other',
    content     text NOT NULL DEFAULT '',
    event       jsonb NOT NULL,  -- the signed event as received
    received_at timestamptz NOT NULL,
    resolved_at timestamptz,
    resolution  text,
    PRIMARY KEY (event_id, target_kind, target)
);
CREATE INDEX reports_open ON reports (received_at) WHERE resolved_at IS NULL;
CREATE INDEX reports_by_target ON reports (target_kind, target);

-- When the credit ran out: set by the meter itself the moment usage passes credit, so it is exact
-- however often the meter is advanced afterwards (a file deleted later changes the rate, not the time).
-- Usage grows linearly between two advances, so the crossing lies at the point where the old usage,
-- growing at the rate this advance shows, met the credit (credit added in the same statement counts:
-- it is when usage passed the credit as it now stands). NULL while credit remains.
ALTER TABLE accounts ADD COLUMN credit_ran_out_at timestamptz;
UPDATE accounts SET credit_ran_out_at = usage_updated_at
 WHERE usage_byte_seconds > credit_byte_seconds;  -- before this was kept: no earlier than known

CREATE FUNCTION note_credit_ran_out() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    elapsed numeric;
    rate numeric;  -- billable bytes over this advance, from the advance itself (NULL: not known)
BEGIN
    IF NEW.usage_byte_seconds <= NEW.credit_byte_seconds THEN
        NEW.credit_ran_out_at := NULL;
        RETURN NEW;
    END IF;
    elapsed := EXTRACT(EPOCH FROM NEW.usage_updated_at - OLD.usage_updated_at);
    IF elapsed > 0 AND NEW.usage_byte_seconds > OLD.usage_byte_seconds THEN
        rate := (NEW.usage_byte_seconds - OLD.usage_byte_seconds) / elapsed;
    ELSE  -- no time passed in this statement: the billable bytes at the recorded allowance
        rate := nullif(greatest(OLD.storage_bytes
                                - coalesce((SELECT free_bytes FROM meter_allowance), 0), 0), 0);
    END IF;
    IF NEW.credit_byte_seconds >= OLD.usage_byte_seconds AND rate IS NOT NULL THEN
        -- usage passed the credit during this advance
        NEW.credit_ran_out_at := OLD.usage_updated_at + make_interval(secs =>
            ((NEW.credit_byte_seconds - OLD.usage_byte_seconds) / rate)::float8);
    ELSIF OLD.credit_ran_out_at IS NULL OR OLD.usage_byte_seconds <= OLD.credit_byte_seconds THEN
        NEW.credit_ran_out_at := OLD.usage_updated_at;  -- no rate to place it by: no earlier than known
    ELSIF NEW.credit_byte_seconds > OLD.credit_byte_seconds AND rate IS NOT NULL THEN
        -- credit bought while over it (not enough to cover what was used): it ran out later by what
        -- that credit covers at today's rate (storage only shrinks while lapsed, so never too early)
        NEW.credit_ran_out_at := least(OLD.usage_updated_at, OLD.credit_ran_out_at + make_interval(secs =>
            ((NEW.credit_byte_seconds - OLD.credit_byte_seconds) / rate)::float8));
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER accounts_note_credit_ran_out BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION note_credit_ran_out();

-- When the account's credit runs out (or ran out) at its current storage: NULL when everything it stores
-- fits the free allowance (nothing is running out, whatever it owes). Far futures are capped
-- at about 3,000 years, so every answer is a timestamp any client can read.
CREATE FUNCTION credit_runs_out_at(
    p_credit numeric, p_usage numeric, p_storage bigint, p_updated timestamptz, p_ran_out timestamptz,
    p_free bigint
) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_storage <= p_free THEN NULL
        WHEN p_usage > p_credit THEN coalesce(p_ran_out, p_updated)
        ELSE p_updated + make_interval(secs =>
            least((p_credit - p_usage) / (p_storage - p_free), 1e11)::float8)
    END
$$;

-- A blocked pubkey can neither store nor buy: refused where the rows are written (SQLSTATE SA403), so
-- every path that writes them (each API, each process) is covered.
CREATE FUNCTION account_blocked(p_pubkey text) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM blocklist WHERE kind = 'pubkey' AND value = p_pubkey)
$$;

CREATE FUNCTION refuse_blocked_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF account_blocked(NEW.pubkey) THEN
        RAISE EXCEPTION 'this account is blocked' USING ERRCODE = 'SA403';
    END IF;
    RETURN NEW;
END
$$;

-- An offer made, claimed for invoicing (again, too: a stale claim taken over) or recorded as invoiced:
-- one made before the block cannot be invoiced after it. An invoice already handed out can still be
-- paid, and is credited: the sats were received.
CREATE FUNCTION refuse_blocked_buyer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status NOT IN ('invoicing', 'invoiced') THEN
        RETURN NEW;
    END IF;
    IF account_blocked(NEW.pubkey) THEN
        RAISE EXCEPTION 'this account is blocked' USING ERRCODE = 'SA403';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER files_refuse_blocked_account BEFORE INSERT ON files
    FOR EACH ROW EXECUTE FUNCTION refuse_blocked_owner();
CREATE TRIGGER offers_refuse_blocked_account BEFORE INSERT OR UPDATE OF status ON offers
    FOR EACH ROW EXECUTE FUNCTION refuse_blocked_buyer();

-- The free allowance the meters run with (FREE_STORAGE_BYTES), and since when. When the server starts
-- with another value, every meter is first advanced to that moment at the old one, so a change never
-- bills (or forgives) storage backwards, nor makes an account's credit "run out" before the change.
CREATE TABLE meter_allowance (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    free_bytes bigint NOT NULL CHECK (free_bytes >= 0),
    since      timestamptz NOT NULL
);
