-- 004: a quarantined payload PostgreSQL's jsonb cannot hold (a NUL character, \u0000)
-- is kept exactly, as its UTF-8 JSON text, in payload_bytes (payload is then NULL).
ALTER TABLE migration.quarantine ADD COLUMN payload_bytes BYTEA;
ALTER TABLE migration.quarantine ADD CONSTRAINT quarantine_payload_kept
  CHECK (payload IS NOT NULL OR payload_bytes IS NOT NULL OR stage = 'ingest');
