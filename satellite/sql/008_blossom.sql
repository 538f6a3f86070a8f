-- Blossom and NIP-96 (issue: every Nostr client on the same store and the same bill).

-- GET /list/<pubkey> and NIP-96 listing: an owner's files newest first, paged by a cursor.
CREATE INDEX files_by_owner_newest ON files (pubkey, created_at DESC, sha256 DESC);

-- What an image's pixels say, for NIP-94 `dim` and `blurhash`: written once the blob is stored, gone
-- with it. Absent for anything that is not an image, or whose pixels could not be read in time.
CREATE TABLE blob_images (
    sha256   text PRIMARY KEY REFERENCES blobs (sha256) ON DELETE CASCADE,
    width    integer NOT NULL CHECK (width > 0),
    height   integer NOT NULL CHECK (height > 0),
    blurhash text NOT NULL CHECK (length(blurhash) BETWEEN 6 AND 100)
);

-- A report's signed event, kept once however many targets it names (sql/007 kept it in every row).
CREATE TABLE report_events (
    event_id    text PRIMARY KEY CHECK (event_id ~ '^[0-9a-f]{64}$'),
    event       jsonb NOT NULL,
    received_at timestamptz NOT NULL
);
ALTER TABLE reports ALTER COLUMN event DROP NOT NULL;
CREATE INDEX reports_open_by_target ON reports (target_kind, target) WHERE resolved_at IS NULL;

-- BUD-07: an invoice handed out in a 402 is tied to the blob it would pay for, and its proof (the
-- preimage a client retries with) is spent once.
ALTER TABLE offers ADD COLUMN sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$');
ALTER TABLE offers ADD COLUMN proof_spent_at timestamptz;
