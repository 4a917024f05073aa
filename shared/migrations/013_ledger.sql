-- Issue 20: one definition of where a snapshot's records stand (shared/ledger/accounting.py).
--
-- For each (school, snapshot, domain) asked about whose snapshot ingest audited or released:
-- the records its audit counted (source), those with a ledger line for it (loaded: written, or
-- superseded by a newer write of the same record), those in quarantine for it, and those
-- parked for it (waiting for a parent) and not in quarantine as well (a parked orphan is
-- quarantined and stays parked, in case its parent comes: counted once, as quarantined).
-- Whether the snapshot is released is given beside: an unreleased one may still grow.
-- Every reader of these counts (the coordinator's sync check, the loader's wait for parents,
-- the validator, the CLI) reads them here.
CREATE OR REPLACE FUNCTION migration.ledger_counts(school_ids TEXT[], snapshot_ids TEXT[], domains TEXT[])
RETURNS TABLE (school_id TEXT, snapshot_id TEXT, domain TEXT, released BOOLEAN,
               source BIGINT, loaded BIGINT, quarantined BIGINT, parked BIGINT)
LANGUAGE sql STABLE AS $$
  WITH k AS (
    SELECT DISTINCT u.school_id, u.snapshot_id, u.domain
      FROM unnest(school_ids, snapshot_ids, domains) AS u (school_id, snapshot_id, domain)),
  pairs AS (SELECT DISTINCT k.school_id, k.snapshot_id FROM k),
  -- grouped per snapshot (one index range each), whatever the number of domains asked
  loaded AS (
    SELECT l.school_id, l.snapshot_id, l.domain, count(*) AS n FROM migration.loaded_records l
      JOIN pairs p ON (l.school_id, l.snapshot_id) = (p.school_id, p.snapshot_id)
     GROUP BY l.school_id, l.snapshot_id, l.domain),
  quarantined AS (
    SELECT q.school_id, q.snapshot_id, q.domain, count(*) AS n FROM migration.quarantine q
      JOIN pairs p ON (q.school_id, q.snapshot_id) = (p.school_id, p.snapshot_id)
     GROUP BY q.school_id, q.snapshot_id, q.domain),
  parked AS (
    SELECT r.school_id, r.snapshot_id, r.domain, count(*) AS n FROM migration.parked_records r
      JOIN pairs p ON (r.school_id, r.snapshot_id) = (p.school_id, p.snapshot_id)
     WHERE NOT EXISTS (SELECT 1 FROM migration.quarantine q
                        WHERE (q.school_id, q.snapshot_id, q.domain, q.record_index)
                            = (r.school_id, r.snapshot_id, r.domain, r.record_index))
     GROUP BY r.school_id, r.snapshot_id, r.domain)
  SELECT k.school_id, k.snapshot_id, k.domain, s.released_at IS NOT NULL,
         -- the audit the release carries; before the release, the one ingest stored first
         coalesce((coalesce(s.audit, a.summary) -> 'source_counts' ->> k.domain)::bigint, 0),
         coalesce(l.n, 0), coalesce(q.n, 0), coalesce(r.n, 0)
    FROM k
    JOIN migration.snapshots s ON (s.school_id, s.snapshot_id) = (k.school_id, k.snapshot_id)
    LEFT JOIN migration.audits a ON (a.school_id, a.snapshot_id) = (k.school_id, k.snapshot_id)
    LEFT JOIN loaded l ON (l.school_id, l.snapshot_id, l.domain) = (k.school_id, k.snapshot_id, k.domain)
    LEFT JOIN quarantined q ON (q.school_id, q.snapshot_id, q.domain) = (k.school_id, k.snapshot_id, k.domain)
    LEFT JOIN parked r ON (r.school_id, r.snapshot_id, r.domain) = (k.school_id, k.snapshot_id, k.domain)
   WHERE s.released_at IS NOT NULL OR a.school_id IS NOT NULL
$$;
