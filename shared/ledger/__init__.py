"""The ledger: where every record of every school stands, and which of its writes won.

One home for the per-record state, the way each of dlt's stages owns its own: no module
outside this package names these tables, compares versions or orders snapshots in SQL
(``tests/unit/test_ledger_home.py`` fails when one does).

- ``versions``: which write of a record wins (pure), and every SQL comparison of versions,
  rendered from that one definition;
- ``snapshots``: which of a school's snapshots is the newest, in SQL;
- ``accounting``: where a snapshot's records stand (source, loaded, quarantined, parked),
  counted by one SQL function (``migration.ledger_counts``) for every reader;
- ``records``: ledger lines (``migration.loaded_records``) and versions
  (``migration.record_versions``), written by the loader;
- ``parking``: records waiting for a parent (``migration.parked_records``, ``parked_refs``),
  parked and un-parked by the loader, swept by the coordinator;
- ``deletions``: tombstones a newer snapshot writes, and what is live
  (``migration.deleted_records``);
- ``quarantine``: records that did not migrate, with their reasons (``migration.quarantine``).

The loader and the coordinator call these operations; every write is made under the
school's write lock (``shared.db.lock_schools``), inside the caller's transaction or, for a
whole operation (the sweep, marking deletions), in one of its own.
"""
