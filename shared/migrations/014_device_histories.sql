-- Issue 21: a school's several browsers. Each record's version in a device's snapshot follows
-- from that device's own history (shared.ledger.devices); ingest derives it once per snapshot.

-- A device's history folded up to its newest derived snapshot: per record, the content's hash
-- and version, or the time the device was seen to have deleted it (zlib'd JSON).
CREATE TABLE IF NOT EXISTS migration.device_states (
  school_id   TEXT NOT NULL,
  device_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  taken_at    TIMESTAMPTZ NOT NULL,
  state       BYTEA NOT NULL,
  derived_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, device_id)
);

-- Per school, every content each record has had, with the latest version it had (for a
-- device's first sight of content another device already held).
CREATE TABLE IF NOT EXISTS migration.school_contents (
  school_id TEXT PRIMARY KEY,
  contents  BYTEA NOT NULL
);

-- One snapshot's derivation, kept for its re-drives and for marking its deletions: the
-- version time of each record whose version is not the snapshot's read time, and the records
-- it deletes (zlib'd JSON).
CREATE TABLE IF NOT EXISTS migration.snapshot_derivations (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  device_id   TEXT NOT NULL,
  versions    BYTEA NOT NULL,
  deleted     BYTEA NOT NULL,
  PRIMARY KEY (school_id, snapshot_id)
);

-- Ledger lines per device: each device's newest snapshot counts its own records, whatever
-- another device's snapshot wrote of the same record.
-- A line names the device's newest snapshot that holds the record (its read time kept beside
-- it): a newer snapshot of the device takes the line over, whatever the record's version.
ALTER TABLE migration.loaded_records ADD COLUMN IF NOT EXISTS device_id TEXT NOT NULL DEFAULT '';
ALTER TABLE migration.loaded_records ADD COLUMN IF NOT EXISTS read_at TIMESTAMPTZ;
UPDATE migration.loaded_records l SET device_id = s.device_id, read_at = s.taken_at
  FROM migration.snapshots s
 WHERE (s.school_id, s.snapshot_id) = (l.school_id, l.snapshot_id);
UPDATE migration.loaded_records SET read_at = source_ts WHERE read_at IS NULL;
ALTER TABLE migration.loaded_records ALTER COLUMN read_at SET NOT NULL;
ALTER TABLE migration.loaded_records DROP CONSTRAINT IF EXISTS loaded_records_pkey;
ALTER TABLE migration.loaded_records ADD PRIMARY KEY (school_id, domain, legacy_id, device_id);

-- Deleted: the greatest deletion is newer than every content write (a change's, and each
-- device's snapshot line).
CREATE OR REPLACE VIEW migration.deleted_records AS
SELECT v.school_id, v.domain, v.legacy_id, v.deleted_by AS snapshot_id, v.deleted_at
  FROM migration.record_versions v
 WHERE v.deleted_ts IS NOT NULL
   AND (v.live_ts IS NULL OR (v.deleted_ts, v.deleted_client, v.deleted_seq) > (v.live_ts, v.live_client, v.live_seq))
   AND NOT EXISTS (SELECT 1 FROM migration.loaded_records l
                    WHERE (l.school_id, l.domain, l.legacy_id) = (v.school_id, v.domain, v.legacy_id)
                      AND (v.deleted_ts, v.deleted_client, v.deleted_seq) <= (l.source_ts, '', 0::bigint));
