-- The scratch schools `schoolmig export --verify` re-ingests an export as: migrated like any
-- school, but not one of the deployment's schools (hidden from status, metrics and reports).
CREATE TABLE IF NOT EXISTS migration.scratch_schools (
  school_id   TEXT PRIMARY KEY,
  export_id   TEXT NOT NULL,
  of_school   TEXT NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Those made before this table: by the exports they verified, and by their names
-- (`<school, 47 characters at most>.verify-<8 hex>`, next to an export of that school).
INSERT INTO migration.scratch_schools (school_id, export_id, of_school)
SELECT split_part(verified_with, '/', 1), export_id, school_id FROM migration.exports WHERE verified_with IS NOT NULL
ON CONFLICT DO NOTHING;
INSERT INTO migration.scratch_schools (school_id, export_id, of_school)
SELECT DISTINCT ON (p.school_id) p.school_id, e.export_id, e.school_id
  FROM migration.school_phase p JOIN migration.exports e
    ON starts_with(p.school_id, left(e.school_id, 47) || '.verify-') AND length(p.school_id) = length(left(e.school_id, 47)) + 16
ON CONFLICT DO NOTHING;

-- Why an operator gave a command (`schoolmig history` shows who, why and what came of it).
ALTER TABLE migration.operator_commands ADD COLUMN IF NOT EXISTS reason TEXT;

-- The newest dead letters, for the status page and the report: where and why only (never
-- a payload or a message), noted by the stage that wrote each (shared/failures/deadletters.py);
-- the newest 1000 are kept. A message handled twice is noted once: by where it was read,
-- the reason, and its own broker time (a broker that lost its data counts offsets from 0
-- again; its time tells a new message at an old offset apart).
CREATE TABLE IF NOT EXISTS migration.recent_dead_letters (
  id          BIGSERIAL PRIMARY KEY,
  at          TIMESTAMPTZ NOT NULL DEFAULT now(),
  stage       TEXT,
  reason      TEXT NOT NULL,
  school_id   TEXT,
  topic       TEXT NOT NULL,
  "partition" INT NOT NULL,
  "offset"    BIGINT NOT NULL,
  source_ts   BIGINT NOT NULL DEFAULT -1,
  UNIQUE (topic, "partition", "offset", reason, source_ts)
);
CREATE INDEX IF NOT EXISTS recent_dead_letters_at ON migration.recent_dead_letters (at);

-- How far each of the coordinator's marker topics reached on the broker when last looked
-- at: a high-water mark never goes back on a broker that kept its data, so one that did
-- means the broker lost it (an in-memory broker restarted, topics deleted by hand).
CREATE TABLE IF NOT EXISTS migration.broker_marks (
  topic       TEXT NOT NULL,
  "partition" INT NOT NULL,
  high_water  BIGINT NOT NULL,
  seen_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, "partition")
);
-- A loss seen and not yet recovered from (modes announced, schools re-driven), by the
-- deployment's control topic: a coordinator stopped half-way leaves it for the next round.
CREATE TABLE IF NOT EXISTS migration.broker_losses (
  marker       TEXT PRIMARY KEY,
  detected_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The plan's last step: once a cutover has stood its grace period without rollback, the
-- school's mode says `clear_local`, and each client archives its local copy to a file,
-- clears it and says so (local.cleared, on the ingest topic): kept here, one row a device
-- and announcement (after a rollback and another cutover, the devices answer again).
ALTER TABLE migration.school_modes ADD COLUMN IF NOT EXISTS clear_local BOOLEAN NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS migration.local_cleanups (
  school_id        TEXT NOT NULL,
  client_id        TEXT NOT NULL,
  announced_at     TIMESTAMPTZ NOT NULL,  -- the clear_local announcement it answers (its mode's updated_at)
  cleared_at       TIMESTAMPTZ NOT NULL,
  archived_records INT NOT NULL,
  archive_sha256   TEXT NOT NULL,
  received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, client_id, announced_at)
);
