-- 015 (issue 22): rows that are not live carry deleted_at; unique keys hold over live rows only;
-- client ids compare by bytes.

-- A target row is live while deleted_at is NULL. It is set (to the version's time) when the
-- row's record is deleted, and when a newer write of its record no longer has the row (a
-- session without one student's entry, a class without a slot, a lesson without a payment);
-- a write that has the row again clears it. Rows are never removed: what references them stays.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['users', 'classrooms', 'teachers', 'classes', 'class_schedules', 'students',
                           'payment_obligations', 'payments', 'attendance_records', 'assessments', 'grades',
                           'private_lessons', 'private_lesson_payment_obligations', 'private_lesson_payments'] LOOP
    EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS deleted_at TIMESTAMPTZ', t);
  END LOOP;
END $$;

-- Rows of records already deleted.
UPDATE users t SET deleted_at = v.deleted_ts
  FROM migration.deleted_records d JOIN migration.record_versions v USING (school_id, domain, legacy_id)
 WHERE (d.school_id, d.legacy_id) = (t.school_id, t.legacy_id) AND d.domain = (CASE t.role WHEN 'teacher' THEN 'teachers' ELSE 'students' END)
   AND t.deleted_at IS NULL;
DO $$
DECLARE pair text[];
BEGIN
  FOREACH pair SLICE 1 IN ARRAY ARRAY[
      ['classrooms', 'classrooms'], ['teachers', 'teachers'], ['classes', 'classes'], ['class_schedules', 'classes'],
      ['students', 'students'], ['payment_obligations', 'payment_obligations'], ['payments', 'payments'],
      ['attendance_records', 'attendance'], ['assessments', 'assessments'], ['grades', 'grades'],
      ['private_lessons', 'private_lessons'], ['private_lesson_payment_obligations', 'private_lessons'],
      ['private_lesson_payments', 'private_lessons']] LOOP
    EXECUTE format('UPDATE %I t SET deleted_at = v.deleted_ts'
                   ' FROM migration.deleted_records d JOIN migration.record_versions v USING (school_id, domain, legacy_id)'
                   ' WHERE (d.school_id, d.domain, d.legacy_id) = (t.school_id, %L, t.legacy_id) AND t.deleted_at IS NULL',
                   pair[1], pair[2]);
  END LOOP;
END $$;

-- Child rows a newer write of their record no longer has (older than the record's newest
-- row in the table) were left live before this migration: they stop being live now.
DO $$
DECLARE t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['class_schedules', 'attendance_records', 'private_lesson_payment_obligations',
                           'private_lesson_payments'] LOOP
    EXECUTE format('UPDATE %I t SET deleted_at = m.newest FROM (SELECT school_id, legacy_id, max(source_ts) AS newest'
                   ' FROM %I GROUP BY school_id, legacy_id) m'
                   ' WHERE (t.school_id, t.legacy_id) = (m.school_id, m.legacy_id) AND t.source_ts < m.newest'
                   ' AND t.deleted_at IS NULL', t, t);
  END LOOP;
END $$;

-- Every unique key of the target schema holds over the live rows (a deleted record holds no
-- value against a live one), checked at the end of each statement (a swap of values inside
-- one write is no violation). The loader never lets a write reach a held value: it waits
-- (shared.ledger.uniques); these constraints are the database's own guarantee.
DO $$
DECLARE c record;
BEGIN
  FOR c IN SELECT conrelid::regclass::text AS tbl, conname FROM pg_constraint
            WHERE contype = 'u' AND connamespace = 'public'::regnamespace
              AND conrelid::regclass::text IN ('users', 'students', 'teachers', 'attendance_records', 'grades',
                                               'private_lesson_payment_obligations') LOOP
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', c.tbl, c.conname);
  END LOOP;
END $$;
ALTER TABLE users ADD CONSTRAINT users_live_email
  EXCLUDE USING btree (school_id WITH =, email WITH =) WHERE (deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE students ADD CONSTRAINT students_live_user
  EXCLUDE USING btree (user_id WITH =) WHERE (deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE teachers ADD CONSTRAINT teachers_live_user
  EXCLUDE USING btree (user_id WITH =) WHERE (deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE attendance_records ADD CONSTRAINT attendance_records_live_student_class_date
  EXCLUDE USING btree (student_id WITH =, class_id WITH =, date WITH =) WHERE (deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE grades ADD CONSTRAINT grades_live_assessment_student
  EXCLUDE USING btree (assessment_id WITH =, student_id WITH =) WHERE (deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE private_lesson_payment_obligations ADD CONSTRAINT private_lesson_payment_obligations_live_lesson
  EXCLUDE USING btree (lesson_id WITH =) WHERE (deleted_at IS NULL) DEFERRABLE INITIALLY IMMEDIATE;
-- The rows of a record, found by its legacy id (marking a record's rows; every other table has one).
CREATE INDEX IF NOT EXISTS users_school_legacy ON users (school_id, legacy_id);

-- One ordering of client ids everywhere: by bytes (what Python's str comparison gives for
-- the ids ingest accepts), whatever the database's default collation.
DROP VIEW IF EXISTS migration.deleted_records;
ALTER TABLE migration.changes ALTER COLUMN client_id TYPE TEXT COLLATE "C";
ALTER TABLE migration.record_versions ALTER COLUMN live_client TYPE TEXT COLLATE "C";
ALTER TABLE migration.record_versions ALTER COLUMN deleted_client TYPE TEXT COLLATE "C";
ALTER TABLE migration.parked_records ALTER COLUMN client_id TYPE TEXT COLLATE "C";
ALTER TABLE migration.loaded_records ALTER COLUMN device_id TYPE TEXT COLLATE "C";
ALTER TABLE migration.snapshots ALTER COLUMN device_id TYPE TEXT COLLATE "C";
ALTER TABLE migration.device_states ALTER COLUMN device_id TYPE TEXT COLLATE "C";
CREATE VIEW migration.deleted_records AS
SELECT v.school_id, v.domain, v.legacy_id, v.deleted_by AS snapshot_id, v.deleted_at
  FROM migration.record_versions v
 WHERE v.deleted_ts IS NOT NULL
   AND (v.live_ts IS NULL OR (v.deleted_ts, v.deleted_client, v.deleted_seq) > (v.live_ts, v.live_client, v.live_seq))
   AND NOT EXISTS (SELECT 1 FROM migration.loaded_records l
                    WHERE (l.school_id, l.domain, l.legacy_id) = (v.school_id, v.domain, v.legacy_id)
                      AND (v.deleted_ts, v.deleted_client, v.deleted_seq) <= (l.source_ts, ''::text COLLATE "C", 0::bigint));

-- Rows that are not live count for nothing: an obligation's status is recomputed from its live
-- payments, and the summaries read live rows only.
CREATE OR REPLACE FUNCTION recompute_obligation_status() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  touched UUID[];
BEGIN
  IF coalesce(current_setting('schoolmig.loading', true), '') = 'on' THEN
    RETURN NULL;
  END IF;
  IF TG_TABLE_NAME = 'payments' THEN
    touched := ARRAY[CASE WHEN TG_OP = 'DELETE' THEN OLD.obligation_id ELSE NEW.obligation_id END,
                     CASE WHEN TG_OP = 'UPDATE' THEN OLD.obligation_id END];
    UPDATE payment_obligations o
       SET status = obligation_status(o.amount, coalesce((SELECT sum(p.amount) FROM payments p
                                                          WHERE p.obligation_id = o.id AND p.deleted_at IS NULL), 0), o.due_date)
     WHERE o.id = ANY (touched);
  ELSE
    touched := ARRAY[CASE WHEN TG_OP = 'DELETE' THEN OLD.lesson_id ELSE NEW.lesson_id END,
                     CASE WHEN TG_OP = 'UPDATE' THEN OLD.lesson_id END];
    UPDATE private_lesson_payment_obligations o
       SET status = obligation_status(o.amount, coalesce((SELECT sum(p.amount) FROM private_lesson_payments p
                                                          WHERE p.lesson_id = o.lesson_id AND p.deleted_at IS NULL), 0), o.due_date)
     WHERE o.lesson_id = ANY (touched);
  END IF;
  RETURN NULL;
END $$;

CREATE OR REPLACE VIEW student_summary AS
SELECT s.id AS student_id, s.school_id, s.legacy_id, u.name, u.email, s.status, s.class_id,
       coalesce(o.total, 0) AS total_due, coalesce(p.total, 0) AS total_paid,
       coalesce(o.total, 0) - coalesce(p.total, 0) AS balance_due
  FROM students s
  JOIN users u ON u.id = s.user_id
  LEFT JOIN (SELECT student_id, sum(amount) AS total FROM payment_obligations WHERE deleted_at IS NULL
              GROUP BY student_id) o ON o.student_id = s.id
  LEFT JOIN (SELECT ob.student_id, sum(pm.amount) AS total FROM payments pm
               JOIN payment_obligations ob ON ob.id = pm.obligation_id
              WHERE pm.deleted_at IS NULL AND ob.deleted_at IS NULL GROUP BY ob.student_id) p ON p.student_id = s.id
 WHERE s.deleted_at IS NULL;

CREATE OR REPLACE VIEW class_summary AS
SELECT c.id AS class_id, c.school_id, c.legacy_id, c.name, c.level, c.status, c.max_students,
       tu.name AS teacher_name, r.name AS classroom_name,
       (SELECT count(*) FROM students st WHERE st.class_id = c.id AND st.deleted_at IS NULL) AS student_count,
       (SELECT count(*) FROM class_schedules cs WHERE cs.class_id = c.id AND cs.is_active AND cs.deleted_at IS NULL)
         AS weekly_sessions
  FROM classes c
  JOIN teachers t ON t.id = c.teacher_id
  JOIN users tu ON tu.id = t.user_id
  JOIN classrooms r ON r.id = c.classroom_id
 WHERE c.deleted_at IS NULL;

-- A write in quarantine for a conflict of the data (shared.ledger.quarantine.DATA_CONFLICT_SQL)
-- blocks the school's validation until it is written after a fix, or an operator accepts it.
-- Accepted per quarantine entry: a later, different conflict of the same record is not.
CREATE TABLE IF NOT EXISTS migration.accepted_conflicts (
  school_id    TEXT NOT NULL,
  snapshot_id  TEXT NOT NULL,
  domain       TEXT NOT NULL,
  record_index INT NOT NULL,
  legacy_id    TEXT,
  actor        TEXT NOT NULL,
  reason       TEXT NOT NULL,
  accepted_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, snapshot_id, domain, record_index)
);
