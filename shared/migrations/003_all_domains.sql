-- 003: the target tables of the remaining domains.
--
-- Foreign keys between domains (payment -> obligation, class -> teacher, ...) are not
-- declared yet: each domain arrives on its own topic, in any order, and a child may land
-- before its parent. They arrive with parking of early children (issue 5); until then the
-- validator and the audit report broken references. Parents inside one source record
-- (a class and its schedule slots, a lesson and its payments) are written in one
-- transaction and do have their foreign keys.

-- The migration writes source timestamps into updated_at; the trigger stamps now()
-- only for writes that are not the loader's (it sets schoolmig.loading for its transaction).
CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF coalesce(current_setting('schoolmig.loading', true), '') <> 'on' THEN
    NEW.updated_at := now();
  END IF;
  RETURN NEW;
END $$;

CREATE TABLE teachers (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  user_id    UUID NOT NULL UNIQUE REFERENCES users (id),
  phone      VARCHAR(20),
  subject    VARCHAR(100) NOT NULL,
  join_date  DATE NOT NULL,
  notes      TEXT,
  is_active  BOOLEAN NOT NULL DEFAULT true,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE classrooms (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  name      VARCHAR(100) NOT NULL,
  location  VARCHAR(255),
  capacity  INT CHECK (capacity > 0),
  is_active BOOLEAN NOT NULL DEFAULT true,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE classes (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  name         VARCHAR(255) NOT NULL,
  description  TEXT,
  level        VARCHAR(50) NOT NULL,
  teacher_id   UUID NOT NULL,
  classroom_id UUID NOT NULL,
  max_students INT CHECK (max_students > 0),
  status       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'completed')),
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE class_schedules (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  class_id    UUID NOT NULL REFERENCES classes (id) ON DELETE CASCADE,
  day_of_week SMALLINT NOT NULL CHECK (day_of_week BETWEEN 1 AND 7),
  start_time  TIME NOT NULL,
  end_time    TIME NOT NULL,
  is_active   BOOLEAN NOT NULL DEFAULT true,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CHECK (start_time < end_time)
);

CREATE TABLE payment_obligations (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  student_id UUID NOT NULL,
  type       VARCHAR(100) NOT NULL,
  amount     DECIMAL(10, 2) NOT NULL CHECK (amount > 0),
  due_date   DATE NOT NULL,
  period     VARCHAR(50),
  status     TEXT NOT NULL CHECK (status IN ('pending', 'partial', 'paid', 'overdue')),
  notes      TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE payments (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  obligation_id UUID NOT NULL,
  amount        DECIMAL(10, 2) NOT NULL CHECK (amount > 0),
  payment_date  DATE NOT NULL,
  method        TEXT NOT NULL CHECK (method IN ('cash', 'card', 'transfer', 'other')),
  notes         TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE attendance_records (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  student_id         UUID NOT NULL,
  class_id           UUID NOT NULL,
  date               DATE NOT NULL,
  status             TEXT NOT NULL CHECK (status IN ('present', 'absent', 'late', 'excused')),
  homework_completed BOOLEAN,
  notes              TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (student_id, class_id, date)
);

CREATE TABLE assessments (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  class_id     UUID NOT NULL,
  title        VARCHAR(255) NOT NULL,
  type         TEXT CHECK (type IN ('homework', 'test', 'quiz', 'project', 'participation')),
  total_points DECIMAL(6, 2) CHECK (total_points > 0),
  date         DATE NOT NULL,
  description  TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE grades (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  assessment_id UUID NOT NULL,
  student_id    UUID NOT NULL,
  value         VARCHAR(10) NOT NULL,
  comments      TEXT,
  date_recorded DATE,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (assessment_id, student_id)
);

CREATE TABLE private_lessons (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  student_id   UUID NOT NULL,
  teacher_id   UUID NOT NULL,
  classroom_id UUID NOT NULL,
  subject      VARCHAR(100) NOT NULL,
  lesson_date  DATE NOT NULL,
  start_time   TIME NOT NULL,
  end_time     TIME NOT NULL,
  status       TEXT NOT NULL CHECK (status IN ('scheduled', 'completed', 'cancelled')),
  notes        TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  CHECK (start_time < end_time)
);

CREATE TABLE private_lesson_payment_obligations (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  lesson_id UUID NOT NULL UNIQUE REFERENCES private_lessons (id) ON DELETE CASCADE,
  amount    DECIMAL(10, 2) NOT NULL CHECK (amount > 0),
  due_date  DATE,
  status    TEXT NOT NULL CHECK (status IN ('pending', 'partial', 'paid', 'overdue')),
  notes     TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE private_lesson_payments (
  id UUID PRIMARY KEY, school_id TEXT NOT NULL, legacy_id TEXT NOT NULL,
  lesson_id    UUID NOT NULL REFERENCES private_lessons (id) ON DELETE CASCADE,
  amount       DECIMAL(10, 2) NOT NULL CHECK (amount > 0),
  payment_date DATE NOT NULL,
  method       TEXT NOT NULL CHECK (method IN ('cash', 'card', 'transfer', 'other')),
  notes        TEXT,
  extras JSONB NOT NULL DEFAULT '{}', source_snapshot_id TEXT NOT NULL, source_ts TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(), updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

DO $$
DECLARE t TEXT;
BEGIN
  FOREACH t IN ARRAY ARRAY['teachers', 'classrooms', 'classes', 'class_schedules', 'payment_obligations', 'payments',
                           'attendance_records', 'assessments', 'grades', 'private_lessons',
                           'private_lesson_payment_obligations', 'private_lesson_payments'] LOOP
    EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION set_updated_at()', t || '_updated_at', t);
    EXECUTE format('CREATE INDEX %I ON %I (school_id, legacy_id)', t || '_school_legacy', t);
  END LOOP;
END $$;
