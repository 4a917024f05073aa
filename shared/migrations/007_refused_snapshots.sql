-- Snapshots ingest refused at their manifest (e.g. larger than SCHOOLMIG_MAX_SNAPSHOT_BYTES):
-- their chunks are not stored, so a refused snapshot never fills the database.
CREATE TABLE migration.refused_snapshots (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  reason      TEXT NOT NULL,
  refused_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);
