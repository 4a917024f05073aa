-- Issue 23: the client's side: each school's one time zone (shared/timezones.py), the zones its
-- devices report, and the change outcomes announced to clients.

-- The zone a school's records are mapped in: an operator's (set before any record was mapped,
-- or again to the same zone), else the one its first mapped write reported, else the default.
-- pinned_at: when records were first mapped in it; from then on it does not change.
CREATE TABLE IF NOT EXISTS migration.school_zones (
  school_id    TEXT PRIMARY KEY,
  zone         TEXT NOT NULL,
  source       TEXT NOT NULL CHECK (source IN ('operator', 'client', 'default')),
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

-- Schools mapped before zones existed were read in UTC (a moment's UTC date): that stays
-- their zone, so what is loaded and what the validator expects agree.
INSERT INTO migration.school_zones (school_id, zone, source, pinned_at)
SELECT school_id, 'UTC', 'default', min(set_at) FROM migration.school_defaults GROUP BY school_id
ON CONFLICT DO NOTHING;

-- The outcome of each change last announced to its client (shared/ledger/outcomes.py): the
-- coordinator publishes a change's outcome when it first settles and whenever an open one
-- (pending, waiting, quarantined) moves.
CREATE TABLE IF NOT EXISTS migration.change_outcomes (
  school_id     TEXT NOT NULL,
  client_id     TEXT COLLATE "C" NOT NULL,
  seq           BIGINT NOT NULL,
  outcome       TEXT NOT NULL,
  announced_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, client_id, seq)
);
CREATE INDEX IF NOT EXISTS change_outcomes_open ON migration.change_outcomes (school_id)
  WHERE outcome IN ('pending', 'waiting', 'quarantined');
