-- Issue 21: a snapshot names the device it was read from, and an upload identical to its
-- device's latest snapshot is that snapshot again (not fanned out, reported unchanged).

-- The browser or installation the snapshot was read from ('' : the school's unnamed device).
ALTER TABLE migration.snapshots ADD COLUMN IF NOT EXISTS device_id TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS snapshots_by_device ON migration.snapshots (school_id, device_id, taken_at);

-- Set when the released snapshot is byte for byte its device's latest one (named here): it
-- is that snapshot again, never fanned out, never the school's newest (shared.ledger.snapshots).
ALTER TABLE migration.snapshots ADD COLUMN IF NOT EXISTS unchanged_of TEXT;

-- What the coordinator answered an operator command (e.g. "refused: …"): the CLI shows it.
ALTER TABLE migration.operator_commands ADD COLUMN IF NOT EXISTS outcome TEXT;
