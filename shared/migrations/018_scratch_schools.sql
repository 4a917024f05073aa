-- The scratch schools `schoolmig export --verify` re-ingests an export as: migrated like any
-- school, but not one of the deployment's schools (hidden from status, metrics and reports).
CREATE TABLE IF NOT EXISTS migration.scratch_schools (
  school_id   TEXT PRIMARY KEY,
  export_id   TEXT NOT NULL,
  of_school   TEXT NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Why an operator gave a command (`schoolmig history` shows who, why and what came of it).
ALTER TABLE migration.operator_commands ADD COLUMN IF NOT EXISTS reason TEXT;

-- The newest dead letters, for the status page and the report: where and why only (never
-- a payload or a message); the coordinator keeps the last 1000. Redelivered, stored once.
CREATE TABLE IF NOT EXISTS migration.recent_dead_letters (
  id          BIGSERIAL PRIMARY KEY,
  at          TIMESTAMPTZ NOT NULL,
  stage       TEXT,
  reason      TEXT NOT NULL,
  school_id   TEXT,
  topic       TEXT NOT NULL,
  "partition" INT NOT NULL,
  "offset"    BIGINT NOT NULL,
  UNIQUE (topic, "partition", "offset", reason)
);
CREATE INDEX IF NOT EXISTS recent_dead_letters_at ON migration.recent_dead_letters (at);
