"""Which write of a record wins: one rule for snapshots and changes, whatever order they
arrive in. Pure.

Every write of a record has a *version* ``(source_ts, client_id, seq)``:

- a change's own: when it was made, by which client, that client's counter;
- a snapshot's record: ``(taken_at, "", 0)``. The empty client sorts before every client
  (a client id has at least one character), so **at equal times a change beats a
  snapshot**: a snapshot is a reading of the data, a change made at that instant is taken
  to come after it (if the snapshot already held it, applying it again changes nothing).

The greatest version wins (last writer wins); the database ends in the state of the
greatest version of each record, so any order of delivery, and any number of repeats,
gives the same result. A delete is a write too: a *tombstone* with its version. It keeps
the rows (a soft delete); a create **or an update** with a greater version revives the
record (counted as ``revived``), an older one loses to it (counted as ``superseded``).
A snapshot that no longer has a record writes a tombstone at its own version.

Ties: two writes with the same version are the same write (a client never reuses a
sequence number; ingest refuses a second, different change under one). A snapshot's record
at the version already held is applied again (a redelivery), a change is not.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from shared.ledger.keys import RecordKey
from shared.wire.messages import CHANGE_ID_PREFIX, ChangeOp, MappedRecord

SNAPSHOT_CLIENT = ""
SNAPSHOT_SEQ = 0


class Version(NamedTuple):
    source_ts: datetime
    client_id: str
    seq: int


def snapshot_version(taken_at: datetime) -> Version:
    return Version(taken_at, SNAPSHOT_CLIENT, SNAPSHOT_SEQ)


def version_of(record: MappedRecord) -> Version:
    change = record.change
    if change is None:
        return snapshot_version(record.source_ts)
    return Version(change.source_ts, change.client_id, change.seq)


def is_delete(record: MappedRecord) -> bool:
    return record.change is not None and record.change.op is ChangeOp.DELETE


def wins(record: MappedRecord, current: Version | None) -> bool:
    """Whether ``record`` is to be applied over the record's ``current`` version."""
    if current is None:
        return True
    mine = version_of(record)
    return mine > current or (mine == current and record.change is None)


def newest(records: list[MappedRecord]) -> MappedRecord:
    """The write among ``records`` (of one record) that wins over the others."""
    best = records[0]
    for record in records[1:]:
        if wins(record, version_of(best)):
            best = record
    return best


def is_deleted(content: Version | None, deletion: Version | None) -> bool:
    """Whether a record whose greatest content write is ``content`` and greatest deletion is
    ``deletion`` is deleted: it is while the deletion is the greater (a soft delete)."""
    return deletion is not None and (content is None or deletion > content)


@dataclass
class Judgement:
    """What :func:`judge` decided for a step's records, in their order."""

    keep: list[MappedRecord] = field(default_factory=list)
    """Writes of content that win: their rows are to be written."""
    stale: list[MappedRecord] = field(default_factory=list)
    """Writes of content that lost to a newer version: nothing of theirs is written."""
    tombstones: list[MappedRecord] = field(default_factory=list)
    """Deletes that are the greatest deletion of their record: their tombstone is kept."""
    tally: Counter[str] = field(default_factory=Counter)
    """Writes judged, by outcome: applied, deleted, revived, superseded."""
    buried: dict[RecordKey, datetime] = field(default_factory=dict)
    """The records the step leaves deleted (their greatest deletion, held or in the step, is
    greater than their greatest content write, held or in the step), each with that
    deletion's time: their rows, written now or not, are not live."""


def _greatest(*versions: Version | None) -> Version | None:
    return max((v for v in versions if v is not None), default=None)


def _buried(
    records: Sequence[MappedRecord],
    keys: Sequence[RecordKey],
    content: Mapping[RecordKey, Version],
    deletion: Mapping[RecordKey, Version],
) -> dict[RecordKey, datetime]:
    """The records a step leaves deleted, over what they hold and the step's own writes."""
    written: dict[RecordKey, Version] = {}
    deleted: dict[RecordKey, Version] = {}
    for record, key in zip(records, keys, strict=True):
        into = deleted if is_delete(record) else written
        into[key] = _greatest(into.get(key), version_of(record)) or version_of(record)
    out: dict[RecordKey, datetime] = {}
    for key in written.keys() | deleted.keys():
        gone = _greatest(deletion.get(key), deleted.get(key))
        if gone is not None and is_deleted(_greatest(content.get(key), written.get(key)), gone):
            out[key] = gone.source_ts
    return out


def judge(
    records: Sequence[MappedRecord],
    keys: Sequence[RecordKey],
    content: Mapping[RecordKey, Version],
    deletion: Mapping[RecordKey, Version],
) -> Judgement:
    """Judge each record (its key in ``keys``) against the versions its record holds now: the
    greatest write of its content and its greatest deletion. A delete is kept beside the
    content (a soft delete); a write of content wins by :func:`wins` and revives a deleted
    record when it is newer than the deletion."""
    out = Judgement()
    out.buried = _buried(records, keys, content, deletion)
    for record, key in zip(records, keys, strict=True):
        mine, has, gone = version_of(record), content.get(key), deletion.get(key)
        beats_deletion = gone is None or mine > gone
        if is_delete(record):
            if beats_deletion:
                out.tombstones.append(record)
            out.tally["deleted" if beats_deletion and (has is None or mine > has) else "superseded"] += 1
        elif wins(record, has):
            out.keep.append(record)
            revived = gone is not None and not (has is not None and has > gone)  # it was not visible
            out.tally[("revived" if revived else "applied") if beats_deletion else "superseded"] += 1
        else:
            out.stale.append(record)
            out.tally["superseded"] += 1
    return out


# ---------------------------------------------------------------------------- in SQL
# Every comparison of versions the database makes is rendered here, from the definitions
# above: a version is a row ``(source_ts, client_id, seq)``, compared as Python compares the
# tuple (lexicographically; client ids by bytes, ``COLLATE "C"``, which is how Python
# compares the ids ingest accepts, whatever the database's default collation; the columns
# holding client ids are declared ``COLLATE "C"`` too (migration 015): see
# tests/integration/test_ledger_sql.py).


def sql_text(value: str) -> str:
    """A constant of this module as an SQL string literal (never input: constants only)."""
    if "'" in value or "\\" in value:
        raise ValueError(f"not a plain SQL literal: {value!r}")
    return f"'{value}'"


def sql_is_change(snapshot_id: str) -> str:
    """The SQL condition that ``snapshot_id`` (an expression) names a change, not a snapshot."""
    return f"starts_with({snapshot_id}, {sql_text(CHANGE_ID_PREFIX)})"


@dataclass(frozen=True)
class SqlVersion:
    """A version as three SQL expressions (columns or parameters), rendered into comparisons
    the way :class:`Version` compares."""

    ts: str
    client: str
    seq: str

    @classmethod
    def of(cls, alias: str, ts: str = "source_ts", client: str = "client_id", seq: str = "seq") -> SqlVersion:
        """The version held in ``alias``'s columns (``alias`` may be empty: no qualifier)."""
        dot = f"{alias}." if alias else ""
        return cls(f"{dot}{ts}", f"{dot}{client}", f"{dot}{seq}")

    @classmethod
    def snapshot(cls, taken_at: str) -> SqlVersion:
        """:func:`snapshot_version` of the SQL expression ``taken_at``."""
        return cls(taken_at, f"{sql_text(SNAPSHOT_CLIENT)}::text", f"{SNAPSHOT_SEQ}::bigint")

    @property
    def row(self) -> str:
        # Client ids by bytes, as Python compares them, whatever the database's collation.
        return f'({self.ts}, {self.client} COLLATE "C", {self.seq})'

    def older(self, other: SqlVersion) -> str:
        return f"{self.row} < {other.row}"

    def not_newer(self, other: SqlVersion) -> str:
        return f"{self.row} <= {other.row}"

    def newer(self, other: SqlVersion) -> str:
        return f"{self.row} > {other.row}"


def sql_snapshot_rewrites(held_ts: str, incoming_ts: str) -> str:
    """The condition under which a snapshot's write at ``incoming_ts`` replaces what a row
    written at ``held_ts`` holds: not older (ties re-applied, :func:`wins`). Guards rows that
    only snapshots write, and the target rows' upserts against a redelivery of an older one."""
    return f"{held_ts} <= {incoming_ts}"
