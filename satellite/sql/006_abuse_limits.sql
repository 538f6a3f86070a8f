-- Limits shared by every process on this database: token buckets for rate limits, and leases for
-- the uploads each account has in progress.

-- One row per (limit, client or account) that has been used lately. A bucket holds up to `burst`
-- tokens and gains `rate` per second; a row whose bucket would be full again is the same as no row,
-- so old rows are pruned. Unlogged: after a crash every bucket starts full, which is only generous.
CREATE UNLOGGED TABLE rate_buckets (
    key        text PRIMARY KEY,
    tokens     double precision NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX rate_buckets_by_age ON rate_buckets (updated_at);

-- Check several buckets at once, all or nothing. Bucket i is allowed when it holds at least needs[i]
-- tokens; if every one is, each loses costs[i] (never below zero; a negative cost gives tokens back,
-- never above the burst). Otherwise nothing is taken, `wait` is the seconds until every bucket would be
-- allowed and `refused` the (1-based) index of the bucket that waits longest. Rows are locked in key
-- order, so concurrent callers on overlapping keys queue instead of deadlocking.
CREATE FUNCTION take_tokens(
    p_keys text[], p_rates float8[], p_bursts float8[], p_costs float8[], p_needs float8[],
    p_now timestamptz, OUT wait float8, OUT refused int
) LANGUAGE plpgsql AS $$
DECLARE
    levels float8[] := '{}';
    level float8;
    this_wait float8;
BEGIN
    wait := 0;
    refused := 0;
    INSERT INTO rate_buckets (key, tokens, updated_at)
        SELECT k, b, p_now FROM unnest(p_keys, p_bursts) AS u(k, b) ORDER BY k
        ON CONFLICT (key) DO NOTHING;
    PERFORM 1 FROM rate_buckets WHERE key = ANY (p_keys) ORDER BY key FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        SELECT least(p_bursts[i], tokens + greatest(0, extract(epoch FROM p_now - updated_at)) * p_rates[i])
            INTO level FROM rate_buckets WHERE key = p_keys[i];
        levels := levels || level;
        IF level < p_needs[i] THEN
            this_wait := (p_needs[i] - level) / p_rates[i];
            IF this_wait > wait THEN
                wait := this_wait;
                refused := i;
            END IF;
        END IF;
    END LOOP;
    IF refused > 0 THEN
        RETURN;
    END IF;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        IF p_costs[i] <> 0 THEN
            UPDATE rate_buckets
               SET tokens = least(p_bursts[i], greatest(0, levels[i] - p_costs[i])),
                   updated_at = greatest(updated_at, p_now)
             WHERE key = p_keys[i];
        END IF;
    END LOOP;
END
$$;

-- Uploads in progress, one row each, held while the body is read and renewed while it lasts. Each
-- process holds a session advisory lock (class 1518214821, key `holder`) for as long as it lives: a
-- lease whose holder's lock is gone belongs to a dead process and counts for nothing at once, even
-- before it lapses at expires_at (which covers a process that took leases without a holder lock).
CREATE UNLOGGED TABLE upload_leases (
    id         bigserial PRIMARY KEY,
    pubkey     text NOT NULL,
    holder     integer,
    expires_at timestamptz NOT NULL
);
CREATE INDEX upload_leases_by_pubkey ON upload_leases (pubkey);

-- A live holder holds its lock exclusively, so a shared try on it fails; one that succeeds (and lasts
-- only to the end of this transaction) finds a dead holder. Cheaper than reading pg_locks, which
-- takes every lock partition.
CREATE FUNCTION upload_lease_live(p_holder integer, p_expires timestamptz, p_now timestamptz)
RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT p_expires > p_now
       AND (p_holder IS NULL OR NOT pg_try_advisory_xact_lock_shared(1518214821, p_holder))
$$;

-- A lease for one more upload of `p_pubkey`, or NULL when it already holds `p_cap` live ones.
CREATE FUNCTION take_upload_lease(
    p_pubkey text, p_cap int, p_now timestamptz, p_expires timestamptz, p_holder integer
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    lease bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('upload lease ' || p_pubkey, 0));
    DELETE FROM upload_leases
     WHERE pubkey = p_pubkey AND NOT upload_lease_live(holder, expires_at, p_now);
    IF (SELECT count(*) FROM upload_leases WHERE pubkey = p_pubkey) >= p_cap THEN
        RETURN NULL;
    END IF;
    INSERT INTO upload_leases (pubkey, holder, expires_at)
        VALUES (p_pubkey, p_holder, p_expires) RETURNING id INTO lease;
    RETURN lease;
END
$$;

-- Offers are pruned (never-invoiced ones soon after they lapse): the index that finds them.
CREATE INDEX offers_lapsed ON offers (expires_at) WHERE status IN ('offered', 'invoicing', 'expired');
