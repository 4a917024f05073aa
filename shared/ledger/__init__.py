"""The ledger: where every record of every school stands, and which of its writes won.

One home for the per-record state, the way each of dlt's stages owns its own: no module
outside this package names these tables, compares versions or orders snapshots in SQL.
``tests/unit/test_ledger_home.py`` checks the services' string literals for that (table
names, row and version comparisons, snapshot orderings); it reads text, so SQL assembled
from pieces that each look harmless can still slip past it.

- ``versions``: which write of a record wins (pure), and every SQL comparison of versions,
  rendered from that one definition;
- ``snapshots``: which of a school's snapshots is the newest, in SQL;
- ``accounting``: where a snapshot's records stand (source, loaded, quarantined, parked),
  counted by one set of statements (``counts_of``) for every reader;
- ``records``: ledger lines (``migration.loaded_records``) and versions
  (``migration.record_versions``), written by the loader;
- ``parking``: records waiting for a parent (``migration.parked_records``, ``parked_refs``),
  parked and un-parked by the loader, swept by the coordinator;
- ``deletions``: tombstones a newer snapshot writes, and what is live
  (``migration.deleted_records``);
- ``quarantine``: records that did not migrate, with their reasons (``migration.quarantine``).

The loader and the coordinator call these operations. Writes of ledger lines, versions and
parking are made under the school's write lock (``shared.platform.db.lock_schools``), inside the
caller's transaction or, for a whole operation (the sweep, marking deletions), in one of
its own. Quarantine entries are stored after the loader's transaction commits, without the
lock (``quarantine.store_quarantine``, idempotent, retried): a crash in between leaves the
batch's offset uncommitted, so the batch comes again and its refusals are found again.
"""
