-- Issue 20: one definition of where a snapshot's records stand (shared/ledger/accounting.py).
--
-- For each (school, snapshot, domain) asked about whose snapshot ingest audited: the records
-- its audit counted (source), those with a ledger line for it (loaded: written, or
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
  SELECT k.school_id, k.snapshot_id, k.domain, s.released_at IS NOT NULL,
         coalesce((a.summary -> 'source_counts' ->> k.domain)::bigint, 0),
         (SELECT count(*) FROM migration.loaded_records l
           WHERE (l.school_id, l.snapshot_id, l.domain) = (k.school_id, k.snapshot_id, k.domain)),
         (SELECT count(*) FROM migration.quarantine q
           WHERE (q.school_id, q.snapshot_id, q.domain) = (k.school_id, k.snapshot_id, k.domain)),
         (SELECT count(*) FROM migration.parked_records p
           WHERE (p.school_id, p.snapshot_id, p.domain) = (k.school_id, k.snapshot_id, k.domain)
             AND NOT EXISTS (SELECT 1 FROM migration.quarantine q2
                              WHERE (q2.school_id, q2.snapshot_id, q2.domain, q2.record_index)
                                  = (p.school_id, p.snapshot_id, p.domain, p.record_index)))
    FROM (SELECT DISTINCT u.school_id, u.snapshot_id, u.domain
            FROM unnest(school_ids, snapshot_ids, domains) AS u (school_id, snapshot_id, domain)) k
    JOIN migration.audits a ON (a.school_id, a.snapshot_id) = (k.school_id, k.snapshot_id)
    LEFT JOIN migration.snapshots s ON (s.school_id, s.snapshot_id) = (k.school_id, k.snapshot_id)
$$;
