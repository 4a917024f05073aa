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
-- The rows of a record, found by its legacy id (marking a record's rows, dropping children).
CREATE INDEX IF NOT EXISTS users_legacy ON users (school_id, legacy_id);
CREATE INDEX IF NOT EXISTS class_schedules_legacy ON class_schedules (school_id, legacy_id);
CREATE INDEX IF NOT EXISTS attendance_records_legacy ON attendance_records (school_id, legacy_id);
CREATE INDEX IF NOT EXISTS private_lesson_payment_obligations_legacy ON private_lesson_payment_obligations (school_id, legacy_id);
CREATE INDEX IF NOT EXISTS private_lesson_payments_legacy ON private_lesson_payments (school_id, legacy_id);

-- One ordering of client ids everywhere: by bytes (what Python's str comparison gives for
-- the ids ingest accepts), whatever the database's default collation.
DROP VIEW IF EXISTS migration.deleted_records;
ALTER TABLE migration.changes ALTER COLUMN client_id TYPE TEXT COLLATE "C";
ALTER TABLE migration.record_versions ALTER COLUMN live_client TYPE TEXT COLLATE "C";
ALTER TABLE migration.record_versions ALTER COLUMN deleted_client TYPE TEXT COLLATE "C";
ALTER TABLE migration.parked_records ALTER COLUMN client_id TYPE TEXT COLLATE "C";
CREATE VIEW migration.deleted_records AS
SELECT v.school_id, v.domain, v.legacy_id, v.deleted_by AS snapshot_id, v.deleted_at
  FROM migration.record_versions v
 WHERE v.deleted_ts IS NOT NULL
   AND (v.live_ts IS NULL OR (v.deleted_ts, v.deleted_client, v.deleted_seq) > (v.live_ts, v.live_client, v.live_seq))
   AND NOT EXISTS (SELECT 1 FROM migration.loaded_records l
                    WHERE (l.school_id, l.domain, l.legacy_id) = (v.school_id, v.domain, v.legacy_id)
                      AND (v.deleted_ts, v.deleted_client, v.deleted_seq) <= (l.source_ts, ''::text COLLATE "C", 0::bigint));
