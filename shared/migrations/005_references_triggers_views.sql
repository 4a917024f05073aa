-- 005: foreign keys between domains, parking for rows whose parent has not arrived,
-- the obligation-status triggers, and the summary views.

-- Early children wait here (not in memory): a record whose parent row is missing is
-- parked whole, with the references it waits for, and written when they exist.
CREATE TABLE migration.parked_records (
  school_id    TEXT NOT NULL,
  domain       TEXT NOT NULL,
  legacy_id    TEXT NOT NULL,
  snapshot_id  TEXT NOT NULL,
  record_index INT NOT NULL,
  source_ts    TIMESTAMPTZ NOT NULL,
  record       JSONB NOT NULL,       -- the mapped record, as the loader received it
  parked_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (school_id, domain, legacy_id)
);
CREATE INDEX parked_records_snapshot ON migration.parked_records (school_id, snapshot_id, domain);

CREATE TABLE migration.parked_refs (
  school_id TEXT NOT NULL,
  domain    TEXT NOT NULL,
  legacy_id TEXT NOT NULL,
  ref_table TEXT NOT NULL,
  ref_id    UUID NOT NULL,
  PRIMARY KEY (school_id, domain, legacy_id, ref_table, ref_id),
  FOREIGN KEY (school_id, domain, legacy_id) REFERENCES migration.parked_records ON DELETE CASCADE
);
CREATE INDEX parked_refs_ref ON migration.parked_refs (ref_table, ref_id);

-- ---------------------------------------------------------------- foreign keys between domains
ALTER TABLE students            ADD FOREIGN KEY (class_id)      REFERENCES classes (id);
ALTER TABLE classes             ADD FOREIGN KEY (teacher_id)    REFERENCES teachers (id);
ALTER TABLE classes             ADD FOREIGN KEY (classroom_id)  REFERENCES classrooms (id);
ALTER TABLE payment_obligations ADD FOREIGN KEY (student_id)    REFERENCES students (id);
ALTER TABLE payments            ADD FOREIGN KEY (obligation_id) REFERENCES payment_obligations (id);
ALTER TABLE attendance_records  ADD FOREIGN KEY (student_id)    REFERENCES students (id);
ALTER TABLE attendance_records  ADD FOREIGN KEY (class_id)      REFERENCES classes (id);
ALTER TABLE assessments         ADD FOREIGN KEY (class_id)      REFERENCES classes (id);
ALTER TABLE grades              ADD FOREIGN KEY (assessment_id) REFERENCES assessments (id);
ALTER TABLE grades              ADD FOREIGN KEY (student_id)    REFERENCES students (id);
ALTER TABLE private_lessons     ADD FOREIGN KEY (student_id)    REFERENCES students (id);
ALTER TABLE private_lessons     ADD FOREIGN KEY (teacher_id)    REFERENCES teachers (id);
ALTER TABLE private_lessons     ADD FOREIGN KEY (classroom_id)  REFERENCES classrooms (id);

CREATE INDEX ON students (class_id);
CREATE INDEX ON classes (teacher_id);
CREATE INDEX ON classes (classroom_id);
CREATE INDEX ON payment_obligations (student_id);
CREATE INDEX ON payments (obligation_id);
CREATE INDEX ON attendance_records (class_id, date);
CREATE INDEX ON assessments (class_id);
CREATE INDEX ON grades (student_id);
CREATE INDEX ON private_lessons (student_id);
CREATE INDEX ON private_lesson_payments (lesson_id);

-- ---------------------------------------------------------------- obligation status from payments
-- The design recomputes an obligation's status from the sum of its payments on every
-- payment insert, update and delete. The migrated status is the school's record of
-- truth, so while the loader writes (schoolmig.loading = 'on' in its transaction) the
-- triggers stand aside; every other write (the app after cutover) recomputes.
CREATE OR REPLACE FUNCTION obligation_status(total NUMERIC, paid NUMERIC, due DATE) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
  SELECT CASE WHEN paid >= total THEN 'paid'
              WHEN paid > 0 THEN 'partial'
              WHEN due IS NOT NULL AND due < current_date THEN 'overdue'
              ELSE 'pending' END
$$;

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
       SET status = obligation_status(o.amount, coalesce((SELECT sum(p.amount) FROM payments p WHERE p.obligation_id = o.id), 0), o.due_date)
     WHERE o.id = ANY (touched);
  ELSE
    touched := ARRAY[CASE WHEN TG_OP = 'DELETE' THEN OLD.lesson_id ELSE NEW.lesson_id END,
                     CASE WHEN TG_OP = 'UPDATE' THEN OLD.lesson_id END];
    UPDATE private_lesson_payment_obligations o
       SET status = obligation_status(o.amount, coalesce((SELECT sum(p.amount) FROM private_lesson_payments p WHERE p.lesson_id = o.lesson_id), 0), o.due_date)
     WHERE o.lesson_id = ANY (touched);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER payments_obligation_status AFTER INSERT OR UPDATE OR DELETE ON payments
  FOR EACH ROW EXECUTE FUNCTION recompute_obligation_status();
CREATE TRIGGER private_lesson_payments_obligation_status AFTER INSERT OR UPDATE OR DELETE ON private_lesson_payments
  FOR EACH ROW EXECUTE FUNCTION recompute_obligation_status();

-- ---------------------------------------------------------------- summary views
CREATE VIEW student_summary AS
SELECT s.id AS student_id, s.school_id, s.legacy_id, u.name, u.email, s.status, s.class_id,
       coalesce(o.total, 0) AS total_due, coalesce(p.total, 0) AS total_paid,
       coalesce(o.total, 0) - coalesce(p.total, 0) AS balance_due
  FROM students s
  JOIN users u ON u.id = s.user_id
  LEFT JOIN (SELECT student_id, sum(amount) AS total FROM payment_obligations GROUP BY student_id) o ON o.student_id = s.id
  LEFT JOIN (SELECT ob.student_id, sum(pm.amount) AS total FROM payments pm
               JOIN payment_obligations ob ON ob.id = pm.obligation_id GROUP BY ob.student_id) p ON p.student_id = s.id;

CREATE VIEW class_summary AS
SELECT c.id AS class_id, c.school_id, c.legacy_id, c.name, c.level, c.status, c.max_students,
       tu.name AS teacher_name, r.name AS classroom_name,
       (SELECT count(*) FROM students st WHERE st.class_id = c.id) AS student_count,
       (SELECT count(*) FROM class_schedules cs WHERE cs.class_id = c.id AND cs.is_active) AS weekly_sessions
  FROM classes c
  JOIN teachers t ON t.id = c.teacher_id
  JOIN users tu ON tu.id = t.user_id
  JOIN classrooms r ON r.id = c.classroom_id;
