-- Issue 12: change events, and the version of every record a change or a deletion touched.

-- Every change ingest accepted, as the client sent it: what the validator replays over the
-- newest snapshot, and the trail of who changed what when. One row per (client, seq): a
-- redelivery is the same row; a different change under the same number is refused.
CREATE TABLE IF NOT EXISTS migration.changes (
  school_id    TEXT NOT NULL,
  client_id    TEXT NOT NULL,
  seq          BIGINT NOT NULL,
  domain       TEXT NOT NULL,
  record_id    TEXT NOT NULL,
  op           TEXT NOT NULL CHECK (op IN ('create', 'update', 'delete')),
  source_ts    TIMESTAMPTZ NOT NULL,
  record       BYTEA,        -- the record's JSON as the pipeline carries it (NULL: a delete)
  digest       TEXT NOT NULL, -- SHA-256 of the change as received: tells a redelivery from a reuse
  received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, client_id, seq)
);
CREATE INDEX IF NOT EXISTS changes_by_time ON migration.changes (school_id, source_ts);

-- Versions (shared.versions) of the records changes or deletions touched. A record written
-- only by snapshots has its version in its ledger line. Two versions each: the greatest write
-- of its content (create, update, or a snapshot's record: what its rows hold) and the
-- greatest deletion. The record is deleted while the deletion is the greater (a soft delete:
-- the rows stay, so whatever references them stays whole, in any order of arrival). The
-- loader and the coordinator write here under the school's write lock.
CREATE TABLE IF NOT EXISTS migration.record_versions (
  school_id       TEXT NOT NULL,
  domain          TEXT NOT NULL,
  legacy_id       TEXT NOT NULL,
  live_ts         TIMESTAMPTZ,  -- NULL: no content written since this row exists (see the ledger)
  live_client     TEXT,
  live_seq        BIGINT,
  live_by         TEXT,         -- the change (chg.<client>.<seq>) or snapshot
  deleted_ts      TIMESTAMPTZ,  -- NULL: never deleted
  deleted_client  TEXT,         -- '' for a snapshot that no longer had it
  deleted_seq     BIGINT,
  deleted_by      TEXT,
  deleted_at      TIMESTAMPTZ,
  PRIMARY KEY (school_id, domain, legacy_id)
);

-- Deletion markers become tombstones with a version (so a late, older change cannot revive
-- a record a newer snapshot deleted); the old name stays, as a view of the deleted records.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'migration' AND tablename = 'deleted_records') THEN
    INSERT INTO migration.record_versions (school_id, domain, legacy_id, deleted_ts, deleted_client, deleted_seq, deleted_by, deleted_at)
    SELECT d.school_id, d.domain, d.legacy_id, coalesce(s.taken_at, d.deleted_at), '', 0, d.snapshot_id, d.deleted_at
      FROM migration.deleted_records d LEFT JOIN migration.snapshots s USING (school_id, snapshot_id)
    ON CONFLICT DO NOTHING;
    DROP TABLE migration.deleted_records;
  END IF;
END $$;
CREATE OR REPLACE VIEW migration.deleted_records AS
SELECT v.school_id, v.domain, v.legacy_id, v.deleted_by AS snapshot_id, v.deleted_at
  FROM migration.record_versions v
  LEFT JOIN migration.loaded_records l USING (school_id, domain, legacy_id)
 WHERE v.deleted_ts IS NOT NULL
   AND (v.live_ts IS NULL OR (v.deleted_ts, v.deleted_client, v.deleted_seq) > (v.live_ts, v.live_client, v.live_seq))
   AND (l.source_ts IS NULL OR (v.deleted_ts, v.deleted_client, v.deleted_seq) > (l.source_ts, '', 0::bigint));

-- A parked change keeps its whole version: of two parked writes of a record, the greater stays.
ALTER TABLE migration.parked_records ADD COLUMN IF NOT EXISTS client_id TEXT NOT NULL DEFAULT '';
ALTER TABLE migration.parked_records ADD COLUMN IF NOT EXISTS seq BIGINT NOT NULL DEFAULT 0;

-- A sync barrier names the snapshot whose sync it proves (NULL: a cutover's final sync).
ALTER TABLE migration.barriers ADD COLUMN IF NOT EXISTS snapshot_id TEXT;
CREATE INDEX IF NOT EXISTS barriers_by_school ON migration.barriers (school_id, sent_at);

-- Files rebuilt from the tables for a school to go back to its browser (schoolmig export), and
-- their proof: re-ingested into a scratch school, they migrate to the same records. A rollback
-- after a cutover needs one made after the cutover.
CREATE TABLE IF NOT EXISTS migration.exports (
  export_id      TEXT PRIMARY KEY,
  school_id      TEXT NOT NULL,
  format         TEXT NOT NULL,
  sha256         TEXT NOT NULL,
  size_bytes     BIGINT NOT NULL,
  records        JSONB NOT NULL,  -- per domain, how many records the file holds
  left_out       JSONB NOT NULL,  -- per domain, records the format cannot carry
  actor          TEXT NOT NULL,
  created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  verified_at    TIMESTAMPTZ,
  verified_with  TEXT            -- the scratch school and snapshot it was re-ingested as
);
CREATE INDEX IF NOT EXISTS exports_by_school ON migration.exports (school_id, created_at);

-- The time a school's records without their own timestamps are given, whatever brings them
-- first (its first snapshot released, or a change before it): fixed once per school, so a
-- record maps to the same row whichever of its writes inserted it.
CREATE TABLE IF NOT EXISTS migration.school_defaults (
  school_id   TEXT PRIMARY KEY,
  default_ts  TIMESTAMPTZ NOT NULL,
  set_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO migration.school_defaults (school_id, default_ts)
SELECT DISTINCT ON (school_id) school_id, coalesce(default_ts, taken_at) FROM migration.snapshots
 WHERE released_at IS NOT NULL ORDER BY school_id, released_at
ON CONFLICT DO NOTHING;

-- When the coordinator marked what a snapshot no longer has (its deletions): from then on a
-- late change older than it, of a record it does not have, is deleted by it too.
ALTER TABLE migration.snapshots ADD COLUMN IF NOT EXISTS deletions_marked_at TIMESTAMPTZ;
