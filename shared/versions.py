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

from datetime import datetime
from typing import NamedTuple

from shared.messages import ChangeOp, MappedRecord

SNAPSHOT_CLIENT = ""


class Version(NamedTuple):
    source_ts: datetime
    client_id: str
    seq: int


def snapshot_version(taken_at: datetime) -> Version:
    return Version(taken_at, SNAPSHOT_CLIENT, 0)


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
