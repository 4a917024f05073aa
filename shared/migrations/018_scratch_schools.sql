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
