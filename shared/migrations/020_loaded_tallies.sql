-- How many ledger lines each (school, snapshot, domain) holds, kept by PostgreSQL per
-- statement as lines are written, so the counts (shared.ledger.accounting), which the
-- coordinator, the loader and the CLI read many times a second, read one row per domain
-- instead of counting every line of every snapshot in flight at each read.
--
-- The invariant, whatever writes (INSERT, UPDATE, DELETE; nothing truncates the ledger):
-- n = the number of migration.loaded_records lines with that school, snapshot and domain.
-- Each statement adds its transition tables' difference, grouped, in key order (two
-- statements updating the same tallies lock them in the same order), in the writer's own
-- transaction: a count never sees a line its tally does not, nor the reverse.
CREATE TABLE IF NOT EXISTS migration.loaded_tallies (
  school_id   TEXT NOT NULL,
  snapshot_id TEXT NOT NULL,
  domain      TEXT NOT NULL,
  n           BIGINT NOT NULL,
  PRIMARY KEY (school_id, snapshot_id, domain)
);

CREATE OR REPLACE FUNCTION migration.tally_lines_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO migration.loaded_tallies AS t (school_id, snapshot_id, domain, n)
  SELECT school_id, snapshot_id, domain, count(*) FROM lines_added
   GROUP BY school_id, snapshot_id, domain ORDER BY school_id, snapshot_id, domain
  ON CONFLICT (school_id, snapshot_id, domain) DO UPDATE SET n = t.n + EXCLUDED.n;
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION migration.tally_lines_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE migration.loaded_tallies t SET n = t.n - r.n
    FROM (SELECT school_id, snapshot_id, domain, count(*) AS n FROM lines_removed
           GROUP BY school_id, snapshot_id, domain) r
   WHERE (t.school_id, t.snapshot_id, t.domain) = (r.school_id, r.snapshot_id, r.domain);
  RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION migration.tally_lines_moved() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- a line that changed snapshot (or school, or domain): -1 where it was, +1 where it is
  INSERT INTO migration.loaded_tallies AS t (school_id, snapshot_id, domain, n)
  SELECT school_id, snapshot_id, domain, sum(d) FROM (
           SELECT school_id, snapshot_id, domain, 1 AS d FROM lines_added
           UNION ALL
           SELECT school_id, snapshot_id, domain, -1 AS d FROM lines_removed) moved
   GROUP BY school_id, snapshot_id, domain HAVING sum(d) <> 0 ORDER BY school_id, snapshot_id, domain
  ON CONFLICT (school_id, snapshot_id, domain) DO UPDATE SET n = t.n + EXCLUDED.n;
  RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS tally_lines_added ON migration.loaded_records;
CREATE TRIGGER tally_lines_added AFTER INSERT ON migration.loaded_records
  REFERENCING NEW TABLE AS lines_added FOR EACH STATEMENT EXECUTE FUNCTION migration.tally_lines_added();
DROP TRIGGER IF EXISTS tally_lines_moved ON migration.loaded_records;
CREATE TRIGGER tally_lines_moved AFTER UPDATE ON migration.loaded_records
  REFERENCING OLD TABLE AS lines_removed NEW TABLE AS lines_added
  FOR EACH STATEMENT EXECUTE FUNCTION migration.tally_lines_moved();
DROP TRIGGER IF EXISTS tally_lines_removed ON migration.loaded_records;
CREATE TRIGGER tally_lines_removed AFTER DELETE ON migration.loaded_records
  REFERENCING OLD TABLE AS lines_removed FOR EACH STATEMENT EXECUTE FUNCTION migration.tally_lines_removed();

-- The lines already there. (A migration is one transaction, and CREATE TRIGGER locks the table
-- against writes until it commits: a line is counted here or by the triggers, never both.)
INSERT INTO migration.loaded_tallies (school_id, snapshot_id, domain, n)
SELECT school_id, snapshot_id, domain, count(*) FROM migration.loaded_records GROUP BY school_id, snapshot_id, domain
ON CONFLICT (school_id, snapshot_id, domain) DO UPDATE SET n = EXCLUDED.n;
