-- Issue 23: the client's side: each school's one time zone (shared/timezones.py), the zones its
-- devices report, and the change outcomes announced to clients.

-- The zone a school's records are mapped in: an operator's (set before any record was mapped,
-- or again to the same zone), else the one its first mapped write reported, else the default.
-- pinned_at: when records were first mapped in it; from then on it does not change.
CREATE TABLE IF NOT EXISTS migration.school_zones (
  school_id    TEXT PRIMARY KEY,
  zone         TEXT NOT NULL,
  source       TEXT NOT NULL CHECK (source IN ('operator', 'client', 'default', 'legacy')),
  reported_by  TEXT COLLATE "C",      -- client: the device whose report fixed it
  set_by       TEXT,                  -- operator: who, and why
  reason       TEXT,
  set_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  pinned_at    TIMESTAMPTZ
);

-- What each device last reported (a manifest's or a change message's timezone): another zone
-- than the school's is an audit note.
CREATE TABLE IF NOT EXISTS migration.device_zones (
  school_id    TEXT NOT NULL,
  device_id    TEXT COLLATE "C" NOT NULL,
  zone         TEXT NOT NULL,
  reported_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, device_id)
);

-- Schools mapped before zones existed had a moment's date read as written (its own offset's
-- calendar date): they keep that rule (shared.timezones.AS_WRITTEN), so what is loaded and
-- what the validator expects agree.
INSERT INTO migration.school_zones (school_id, zone, source, pinned_at)
SELECT school_id, 'as-written', 'legacy', min(set_at) FROM migration.school_defaults GROUP BY school_id
ON CONFLICT DO NOTHING;

-- Each change's outcome as last announced to its client (shared/ledger/outcomes.py): a row for
-- every change from its arrival (the trigger below: pending, never announced). The coordinator
-- checks the open ones (pending, waiting, quarantined), the never announced, and the applied
-- ones a newer change of their record has overtaken since, the least recently checked first,
-- and announces an outcome when it first settles and whenever it moves.
CREATE TABLE IF NOT EXISTS migration.change_outcomes (
  school_id     TEXT NOT NULL,
  client_id     TEXT COLLATE "C" NOT NULL,
  seq           BIGINT NOT NULL,
  outcome       TEXT NOT NULL DEFAULT 'pending',
  announced_at  TIMESTAMPTZ,             -- NULL: never announced
  checked_at    TIMESTAMPTZ,             -- NULL: never checked
  recheck       BOOLEAN NOT NULL DEFAULT false,  -- applied, and a newer change of its record was applied since
  PRIMARY KEY (school_id, client_id, seq)
);
CREATE INDEX IF NOT EXISTS change_outcomes_due ON migration.change_outcomes (checked_at NULLS FIRST)
  WHERE outcome IN ('pending', 'waiting', 'quarantined') OR announced_at IS NULL OR recheck;
-- A record's changes, for the outcomes of the older ones a newer change overtakes.
CREATE INDEX IF NOT EXISTS changes_by_record ON migration.changes (school_id, domain, record_id);

CREATE OR REPLACE FUNCTION migration.change_received() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO migration.change_outcomes (school_id, client_id, seq) VALUES (NEW.school_id, NEW.client_id, NEW.seq)
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS change_received ON migration.changes;
CREATE TRIGGER change_received AFTER INSERT ON migration.changes FOR EACH ROW EXECUTE FUNCTION migration.change_received();
INSERT INTO migration.change_outcomes (school_id, client_id, seq)
SELECT school_id, client_id, seq FROM migration.changes ON CONFLICT DO NOTHING;
