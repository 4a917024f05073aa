"""Which of a school's snapshots is the newer: one order, rendered into SQL here.

Snapshots are ordered by when they were taken, then by their ids (two taken at the same
instant are still ordered, so one of them is the newest). The newest snapshot of a set
(released ones, those whose deletions are marked, those audited) is the greatest in this
order; a snapshot's records are the versions :func:`shared.ledger.versions.snapshot_version`
of its ``taken_at``.
"""

from __future__ import annotations


def own_sql(alias: str = "") -> str:
    """The condition that the snapshot in ``alias``'s row stands for itself: not the same file
    again as its device's latest (``unchanged_of``: that one stands, and is the newer in every
    choice of a school's newest)."""
    dot = f"{alias}." if alias else ""
    return f"{dot}unchanged_of IS NULL"


def adopted_sql(alias: str = "") -> str:
    """The condition that the snapshot in ``alias``'s row is released and :func:`own_sql`."""
    dot = f"{alias}." if alias else ""
    return f"({dot}released_at IS NOT NULL AND {own_sql(alias)})"


def rank_sql(alias: str, taken_at: str = "taken_at", snapshot_id: str = "snapshot_id") -> str:
    """The rank of the snapshot in ``alias``'s columns (``alias`` empty: unqualified)."""
    dot = f"{alias}." if alias else ""
    return f"({dot}{taken_at}, {dot}{snapshot_id})"


def later_sql(a: str, b: str) -> str:
    """The condition that the snapshot ranked ``a`` (a :func:`rank_sql`) is newer than ``b``."""
    return f"{a} > {b}"


def newest_first_sql(alias: str = "") -> str:
    """``ORDER BY`` terms that put the newest snapshot first."""
    dot = f"{alias}." if alias else ""
    return f"{dot}taken_at DESC, {dot}snapshot_id DESC"


def newest_per_school_sql(where: str, alias: str = "s") -> str:
    """A query of each school's newest snapshot among ``migration.snapshots`` rows ``alias``
    matching ``where``: (school_id, snapshot_id, taken_at)."""
    return (
        f"SELECT DISTINCT ON ({alias}.school_id) {alias}.school_id, {alias}.snapshot_id, {alias}.taken_at"
        f" FROM migration.snapshots {alias} WHERE {where} ORDER BY {alias}.school_id, {newest_first_sql(alias)}"
    )
