-- 002: the pre-migration audit, backup files, and incomplete-snapshot reports.

CREATE TABLE migration.audits (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  summary     JSONB NOT NULL,
  findings    JSONB NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);

ALTER TABLE migration.backups ADD COLUMN file_path TEXT;

-- A snapshot (or a stray chunk group without a manifest) reported as incomplete, once.
CREATE TABLE migration.incomplete_snapshots (
  school_id      TEXT NOT NULL,
  snapshot_id    TEXT NOT NULL,
  missing_chunks INT[] NOT NULL,
  reported_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);
