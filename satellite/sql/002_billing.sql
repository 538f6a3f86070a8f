-- Storage purchases: kind 9733 offers, the user's kind 9734 payment, the invoice and the 9735 receipt.

CREATE TABLE offers (
    id                   text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),  -- the 9733 event id
    pubkey               text NOT NULL CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    gb_months            integer NOT NULL CHECK (gb_months > 0),
    amount_msat          bigint NOT NULL CHECK (amount_msat > 0),
    offer                jsonb NOT NULL,
    status               text NOT NULL DEFAULT 'offered'
                         CHECK (status IN ('offered', 'invoiced', 'paid', 'underpaid', 'expired')),
    payment              text,          -- the signed 9734 JSON exactly as received (its sha256 is the
                                        -- invoice's description hash)
    bolt11               text,
    payment_hash         text UNIQUE,
    amount_received_msat bigint,
    preimage             text,
    receipt              jsonb,
    expires_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,
    invoiced_at          timestamptz,
    paid_at              timestamptz
);
CREATE INDEX offers_by_pubkey ON offers (pubkey, created_at);
CREATE INDEX offers_open ON offers (expires_at) WHERE status IN ('offered', 'invoiced');

-- Where each backend's settlement stream resumes.
CREATE TABLE lightning_cursors (
    backend    text PRIMARY KEY,
    cursor     text NOT NULL,
    updated_at timestamptz NOT NULL
);

-- The built-in dev node's invoices (in the database so every process agrees).
CREATE SEQUENCE dev_settle_index;
CREATE TABLE dev_invoices (
    payment_hash         text PRIMARY KEY,
    bolt11               text NOT NULL,
    amount_msat          bigint NOT NULL,
    preimage             text NOT NULL,
    expires_at           timestamptz NOT NULL,
    created_at           timestamptz NOT NULL,
    settled_at           timestamptz,
    amount_received_msat bigint,
    settle_index         bigint UNIQUE
);
