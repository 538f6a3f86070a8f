-- Every change that can make a served blob disappear (deleted, or blocked) is announced on the
-- `blob_changed` channel with its sha256, so each process can drop it from its in-memory cache.
-- A trigger, so that every writer announces: the API, operator scripts, or SQL typed by hand.

CREATE FUNCTION announce_blob_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'blobs' THEN
        PERFORM pg_notify('blob_changed', OLD.sha256);
    ELSE
        IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.kind = 'sha256' THEN
            PERFORM pg_notify('blob_changed', NEW.value);
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.kind = 'sha256' THEN
            PERFORM pg_notify('blob_changed', OLD.value);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER blobs_announce_change AFTER UPDATE OR DELETE ON blobs
    FOR EACH ROW EXECUTE FUNCTION announce_blob_change();
CREATE TRIGGER blocklist_announce_change AFTER INSERT OR UPDATE OR DELETE ON blocklist
    FOR EACH ROW EXECUTE FUNCTION announce_blob_change();
