-- Accounts, blobs, files, single-use auth events, blocklist.
-- Usage and credit are exact byte-seconds (NUMERIC): 1 GB-month = 10^9 B x 2,592,000 s.

CREATE TABLE accounts (
    pubkey              text PRIMARY KEY CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    credit_byte_seconds numeric NOT NULL DEFAULT 0 CHECK (credit_byte_seconds >= 0),
    usage_byte_seconds  numeric NOT NULL DEFAULT 0 CHECK (usage_byte_seconds >= 0),
    storage_bytes       bigint NOT NULL DEFAULT 0 CHECK (storage_bytes >= 0),
    usage_updated_at    timestamptz NOT NULL,
    created_at          timestamptz NOT NULL
);

CREATE TABLE blobs (
    sha256       text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size         bigint NOT NULL CHECK (size > 0),
    type         text NOT NULL,
    ext          text NOT NULL,
    infohash     text NOT NULL CHECK (infohash ~ '^[0-9a-f]{40}$'),
    piece_length integer NOT NULL CHECK (piece_length > 0),
    pieces       bytea NOT NULL,
    created_at   timestamptz NOT NULL
);

CREATE TABLE files (
    pubkey     text NOT NULL REFERENCES accounts (pubkey),
    sha256     text NOT NULL REFERENCES blobs (sha256),
    name       text NOT NULL,
    label      text,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (pubkey, sha256)
);
CREATE INDEX files_by_sha256 ON files (sha256);

CREATE TABLE auth_events (
    id         text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX auth_events_by_expiry ON auth_events (expires_at);

CREATE TABLE blocklist (
    kind       text NOT NULL CHECK (kind IN ('sha256', 'pubkey')),
    value      text NOT NULL,
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value)
);
