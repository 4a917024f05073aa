-- Issue 12: successive snapshots of one school.

-- The time given to records without their own timestamps: the school's first snapshot's,
-- fixed when this snapshot is released, so an unchanged record maps to the same row in
-- every later snapshot (the snapshot's own time moved, and with it 96 records that had not).
ALTER TABLE migration.snapshots ADD COLUMN IF NOT EXISTS default_ts TIMESTAMPTZ;

-- Records a newer snapshot no longer has: their rows stay (with their history), marked here
-- as deleted by that snapshot; a later snapshot that has them again revives them.
CREATE TABLE IF NOT EXISTS migration.deleted_records (
  school_id    TEXT NOT NULL,
  domain       TEXT NOT NULL,
  legacy_id    TEXT NOT NULL,
  snapshot_id  TEXT NOT NULL,
  deleted_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, domain, legacy_id)
);

-- Snapshots released after a newer one of the same school was adopted: not adopted
-- (last writer wins), reported as superseded.
CREATE TABLE IF NOT EXISTS migration.superseded_snapshots (
  school_id      TEXT NOT NULL,
  snapshot_id    TEXT NOT NULL,
  superseded_by  TEXT NOT NULL,
  noted_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);
