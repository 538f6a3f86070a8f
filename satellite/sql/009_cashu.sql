-- Paying with Cashu ecash (NUT-24): a 402 also offers a payment request, and a token sent back is
-- swapped at a trusted mint for proofs only this server can spend, then credited once.

-- How an offer is paid: by its Lightning invoice, or by a Cashu token (never invoiced).
ALTER TABLE offers ADD COLUMN method text NOT NULL DEFAULT 'lightning' CHECK (method IN ('lightning', 'cashu'));

-- One row per token received (named by its secrets), from the moment before the mint is asked:
--   swapping -> swapped (the mint signed our outputs; `proofs` holds the server's new ecash)
--            -> credited (the offer is paid and the account credited, in one transaction)
--   swapping -> refused (the mint refused the token: nothing was received; kept as a record only, so
--               the same token may be tried again, and the offer is free for another)
-- `outputs` holds the secrets and blinding factors of the outputs asked for, so a swap whose answer
-- was lost (a crash, a dropped connection) is recovered from the mint (NUT-09) by the next attempt.
-- `lease_until` is when a request working on the row gives it up (or is presumed dead).
CREATE TABLE cashu_redemptions (
    id          bigserial PRIMARY KEY,
    token_key   text NOT NULL CHECK (token_key ~ '^[0-9a-f]{64}$'),
    offer_id    text NOT NULL,
    pubkey      text NOT NULL CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    mint        text NOT NULL,
    state       text NOT NULL CHECK (state IN ('swapping', 'swapped', 'credited', 'refused')),
    inputs      jsonb NOT NULL,
    outputs     jsonb NOT NULL,
    proofs      jsonb,
    amount_sat  bigint NOT NULL CHECK (amount_sat > 0),  -- the token's face value
    fee_sat     bigint NOT NULL CHECK (fee_sat >= 0),    -- the mint's input fee, paid out of it
    reason      text,
    lease_until timestamptz NOT NULL,
    created_at  timestamptz NOT NULL,
    finished_at timestamptz,
    exported_at timestamptz,  -- when `satellite cashu-proofs --mark-exported` handed the proofs out
    CHECK ((state IN ('swapped', 'credited')) = (proofs IS NOT NULL))
);
-- A token is taken once: one row per token that the mint has not refused.
CREATE UNIQUE INDEX cashu_redemptions_one_per_token ON cashu_redemptions (token_key) WHERE state <> 'refused';
-- One token pays an offer: a second one for the same offer is refused before the mint is asked.
CREATE UNIQUE INDEX cashu_redemptions_one_per_offer ON cashu_redemptions (offer_id) WHERE state <> 'refused';
CREATE INDEX cashu_redemptions_held ON cashu_redemptions (mint) WHERE proofs IS NOT NULL AND exported_at IS NULL;

-- A blocked account's token is not taken.
CREATE TRIGGER cashu_redemptions_refuse_blocked_account BEFORE INSERT ON cashu_redemptions
    FOR EACH ROW EXECUTE FUNCTION refuse_blocked_owner();
