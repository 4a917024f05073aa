-- 001: pipeline bookkeeping (schema "migration") and the first target tables.
-- Later migrations add the remaining target tables, foreign keys to them, triggers, views.

CREATE SCHEMA IF NOT EXISTS migration;

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

-- ---------------------------------------------------------------- ingest: snapshots, chunks, backups
CREATE TABLE migration.snapshots (
  school_id    TEXT NOT NULL,
  snapshot_id  TEXT NOT NULL,
  format       TEXT NOT NULL,
  taken_at     TIMESTAMPTZ NOT NULL,
  size_bytes   BIGINT NOT NULL,
  sha256       TEXT NOT NULL,
  chunk_count  INT NOT NULL,
  manifest     JSONB NOT NULL,
  received_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  released_at  TIMESTAMPTZ,
  audit        JSONB,
  PRIMARY KEY (school_id, snapshot_id)
);

CREATE TABLE migration.snapshot_chunks (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  idx         INT NOT NULL,
  data        BYTEA NOT NULL,
  received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id, idx)
);

CREATE TABLE migration.backups (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  sha256      TEXT NOT NULL,
  size_bytes  BIGINT NOT NULL,
  content     BYTEA NOT NULL,
  stored_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);

-- ---------------------------------------------------------------- accounting
CREATE TABLE migration.loaded_records (
  school_id    TEXT NOT NULL,
  domain       TEXT NOT NULL,
  legacy_id    TEXT NOT NULL,
  snapshot_id  TEXT NOT NULL,
  record_index INT NOT NULL,
  source_ts    TIMESTAMPTZ NOT NULL,
  loaded_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, domain, legacy_id)
);
CREATE INDEX loaded_records_snapshot ON migration.loaded_records (school_id, snapshot_id, domain);

CREATE TABLE migration.quarantine (
  school_id      TEXT NOT NULL,
  snapshot_id    TEXT NOT NULL,
  domain         TEXT NOT NULL,
  record_index   INT NOT NULL,
  legacy_id      TEXT,
  stage          TEXT NOT NULL,
  reason         TEXT NOT NULL,
  message        TEXT NOT NULL,
  payload        JSONB,
  quarantined_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id, domain, record_index)
);

-- ---------------------------------------------------------------- coordinator and validator
CREATE TABLE migration.school_phase (
  school_id   TEXT PRIMARY KEY,
  phase       TEXT NOT NULL,
  snapshot_id TEXT,
  updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE migration.phase_transitions (
  id          BIGSERIAL PRIMARY KEY,
  school_id   TEXT NOT NULL,
  snapshot_id TEXT,
  from_phase  TEXT,
  to_phase    TEXT NOT NULL,
  actor       TEXT NOT NULL,
  reason      TEXT NOT NULL,
  at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE migration.validation_runs (
  run_id      TEXT PRIMARY KEY,
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  ok          BOOLEAN,
  result      JSONB,
  requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  finished_at TIMESTAMPTZ
);

CREATE TABLE migration.reports (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  report      JSONB NOT NULL,
  created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id)
);

-- ---------------------------------------------------------------- target: users, students
CREATE TABLE users (
  id                 UUID PRIMARY KEY,
  school_id          TEXT NOT NULL,
  legacy_id          TEXT NOT NULL,
  email              VARCHAR(255) NOT NULL,
  name               VARCHAR(255) NOT NULL,
  avatar_url         TEXT,
  role               TEXT NOT NULL CHECK (role IN ('admin', 'teacher', 'student')),
  is_active          BOOLEAN NOT NULL DEFAULT true,
  extras             JSONB NOT NULL DEFAULT '{}',
  source_snapshot_id TEXT NOT NULL,
  source_ts          TIMESTAMPTZ NOT NULL,
  created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (school_id, email)
);
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE students (
  id                             UUID PRIMARY KEY,
  school_id                      TEXT NOT NULL,
  legacy_id                      TEXT NOT NULL,
  user_id                        UUID NOT NULL REFERENCES users (id),
  phone                          VARCHAR(20),
  class_id                       UUID, -- FK to classes arrives with the classes table
  status                         TEXT NOT NULL CHECK (status IN ('active', 'inactive')),
  join_date                      DATE NOT NULL,
  date_of_birth                  DATE NOT NULL,
  place_of_birth                 VARCHAR(255),
  address                        TEXT,
  parent_name                    VARCHAR(255),
  parent_email                   VARCHAR(255),
  parent_phone                   VARCHAR(20),
  emergency_contact_name         VARCHAR(255),
  emergency_contact_relationship VARCHAR(100),
  emergency_contact_phone        VARCHAR(20),
  academic_level                 VARCHAR(50),
  gpa                            DECIMAL(3, 2) CHECK (gpa >= 0 AND gpa <= 4),
  enrollment_date                DATE NOT NULL,
  has_discount                   BOOLEAN NOT NULL DEFAULT false,
  discount_type                  TEXT CHECK (discount_type IN ('relatives', 'social_case', 'single_parent', 'free_of_charge')),
  discount_amount                DECIMAL(10, 2) CHECK (discount_amount >= 0),
  extras                         JSONB NOT NULL DEFAULT '{}',
  source_snapshot_id             TEXT NOT NULL,
  source_ts                      TIMESTAMPTZ NOT NULL,
  created_at                     TIMESTAMPTZ NOT NULL DEFAULT now(),
  updated_at                     TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (user_id)
);
CREATE INDEX students_school_legacy ON students (school_id, legacy_id);
CREATE TRIGGER students_updated_at BEFORE UPDATE ON students FOR EACH ROW EXECUTE FUNCTION set_updated_at();
