-- Whether a parked write also has a quarantine entry (an orphan, or a unique conflict, kept
-- parked in case what it waits for comes): such a write counts as quarantined, not parked
-- (shared.ledger.accounting). Kept by PostgreSQL as the rows change, so the counts read the
-- writes that really wait (a partial index) instead of probing the quarantine for every parked
-- row at every count: measured, that probe was 47% of PostgreSQL's time in a 100-school run.
--
-- The invariant, whatever writes (INSERT, UPDATE or DELETE on either table; nothing truncates
-- the quarantine): held = EXISTS (a quarantine entry with the parked row's
-- school, snapshot, domain and record index). A parked row's own writes compute it (row
-- trigger); the quarantine's writes judge again the parked rows they match (statement
-- triggers, one UPDATE per statement), by one rule (quarantined_entry). Both sides of a
-- match are written under the school's write lock
-- (shared.platform.db.lock_schools: the loader's parking and refusals, the coordinator's
-- sweep), so neither misses the other's uncommitted row.
ALTER TABLE migration.parked_records ADD COLUMN IF NOT EXISTS held BOOLEAN NOT NULL DEFAULT false;

-- The one rule: held is whether the quarantine has the parked row's entry.
CREATE OR REPLACE FUNCTION migration.quarantined_entry(school TEXT, snapshot TEXT, dom TEXT, idx INT) RETURNS BOOLEAN
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM migration.quarantine q
                  WHERE (q.school_id, q.snapshot_id, q.domain, q.record_index) = (school, snapshot, dom, idx))
$$;

CREATE OR REPLACE FUNCTION migration.parked_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.held := migration.quarantined_entry(NEW.school_id, NEW.snapshot_id, NEW.domain, NEW.record_index);
  RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS parked_held ON migration.parked_records;
CREATE TRIGGER parked_held BEFORE INSERT OR UPDATE OF school_id, snapshot_id, domain, record_index
  ON migration.parked_records FOR EACH ROW EXECUTE FUNCTION migration.parked_held();

-- The parked rows a statement's entries (added, removed, or re-keyed: old and new) match,
-- judged again.
CREATE OR REPLACE FUNCTION migration.quarantine_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE migration.parked_records p
     SET held = migration.quarantined_entry(p.school_id, p.snapshot_id, p.domain, p.record_index)
    FROM quarantine_changed c
   WHERE (p.school_id, p.snapshot_id, p.domain, p.record_index) = (c.school_id, c.snapshot_id, c.domain, c.record_index);
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS quarantine_added ON migration.quarantine;
CREATE TRIGGER quarantine_added AFTER INSERT ON migration.quarantine
  REFERENCING NEW TABLE AS quarantine_changed FOR EACH STATEMENT EXECUTE FUNCTION migration.quarantine_changed();
DROP TRIGGER IF EXISTS quarantine_moved_from ON migration.quarantine;
CREATE TRIGGER quarantine_moved_from AFTER UPDATE ON migration.quarantine
  REFERENCING OLD TABLE AS quarantine_changed FOR EACH STATEMENT EXECUTE FUNCTION migration.quarantine_changed();
DROP TRIGGER IF EXISTS quarantine_moved_to ON migration.quarantine;
CREATE TRIGGER quarantine_moved_to AFTER UPDATE ON migration.quarantine
  REFERENCING NEW TABLE AS quarantine_changed FOR EACH STATEMENT EXECUTE FUNCTION migration.quarantine_changed();
DROP TRIGGER IF EXISTS quarantine_removed ON migration.quarantine;
CREATE TRIGGER quarantine_removed AFTER DELETE ON migration.quarantine
  REFERENCING OLD TABLE AS quarantine_changed FOR EACH STATEMENT EXECUTE FUNCTION migration.quarantine_changed();

-- The rows already there.
UPDATE migration.parked_records p SET held = migration.quarantined_entry(p.school_id, p.snapshot_id, p.domain, p.record_index);

-- The writes that really wait, by snapshot: what the counts read.
CREATE INDEX IF NOT EXISTS parked_records_waiting ON migration.parked_records (school_id, snapshot_id, domain)
  WHERE NOT held;
