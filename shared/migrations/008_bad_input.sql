-- Issue 11: bad input never stalls anything.

-- A dead letter whose payload is too large to travel in a Kafka message keeps it here; the
-- dead letter names the row (by where the message was read).
CREATE TABLE IF NOT EXISTS migration.dead_letter_payloads (
  topic       TEXT NOT NULL,
  partition   INT NOT NULL,
  "offset"    BIGINT NOT NULL,
  size_bytes  INT NOT NULL,
  payload     BYTEA NOT NULL,
  stored_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, partition, "offset")
);

-- Chunks are candidates, by their hash: a chunk with a wrong hash sent before the right one
-- (before the manifest says which is right) no longer poisons the snapshot; assembly takes
-- the candidate whose hash the manifest names.
ALTER TABLE migration.snapshot_chunks ADD COLUMN IF NOT EXISTS sha256 TEXT;
UPDATE migration.snapshot_chunks SET sha256 = encode(sha256(data), 'hex') WHERE sha256 IS NULL;
ALTER TABLE migration.snapshot_chunks ALTER COLUMN sha256 SET NOT NULL;
ALTER TABLE migration.snapshot_chunks DROP CONSTRAINT IF EXISTS snapshot_chunks_pkey;
ALTER TABLE migration.snapshot_chunks ADD PRIMARY KEY (school_id, snapshot_id, idx, sha256);
