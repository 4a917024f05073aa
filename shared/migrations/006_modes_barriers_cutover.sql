-- Issue 7: what clients of each school must do, the sync barriers, and cutover progress.

CREATE TABLE migration.school_modes (
  school_id   TEXT PRIMARY KEY,
  mode        TEXT NOT NULL CHECK (mode IN ('localStorage', 'hybrid', 'api')),
  maintenance BOOLEAN NOT NULL DEFAULT false,
  reason      TEXT NOT NULL,
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A barrier is drained when every (topic, origin, partition) copy has been acknowledged.
CREATE TABLE migration.barriers (
  barrier_id  TEXT PRIMARY KEY,
  school_id   TEXT NOT NULL,
  expected    INT NOT NULL,
  sent_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE migration.barrier_acks (
  barrier_id  TEXT NOT NULL,
  topic       TEXT NOT NULL,
  origin      TEXT NOT NULL,
  partition   INT NOT NULL,
  acked_by    TEXT NOT NULL,
  acked_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (barrier_id, topic, origin, partition)
);

-- One row per cutover attempt; `step` is the last step completed, so a restarted
-- coordinator resumes with the next one.
CREATE TABLE migration.cutovers (
  attempt_id  TEXT PRIMARY KEY,
  school_id   TEXT NOT NULL,
  actor       TEXT NOT NULL,
  reason      TEXT NOT NULL,
  step        TEXT,
  status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'completed', 'rolled_back')),
  error       TEXT,
  started_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX cutovers_one_running ON migration.cutovers (school_id) WHERE status = 'running';

-- Critical audit findings stop a snapshot before `audited`; an operator may override them
-- with a written reason (before or after the snapshot arrives).
CREATE TABLE migration.audit_overrides (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  actor       TEXT NOT NULL,
  reason      TEXT NOT NULL,
  at          TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);
CREATE TABLE migration.blocked_snapshots (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  event       JSONB NOT NULL,
  blocked_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);
