"""Unique values that change hands: which writes may take their values now, which wait. Pure.

Every unique key of the target schema (``shared.catalog.tables.UNIQUE_KEYS``) holds over the live
rows (a deleted record, a child its record no longer has, holds nothing). A write that
claims a value a live row of *another* record holds waits for that row, as a child waits
for its parent: it is parked (``shared.ledger.parking``) and tried again when the holder's
row is written again or stops being live. So when one record hands a value to another, the
taking write waits for the giving one, whichever is delivered first, and the tables end as
the history applied in version order.

:func:`settle` judges a step (the records written together: one statement per table,
checked at its end) on the state it leaves, not row by row: values that move between the
step's records (a handover, a swap, a cycle a → b → c → a) are no conflict. The loader
pulls a holder's own waiting write into the step, so a swap or a cycle whose writes arrive
one by one is settled when its last write comes. Of two writes of a step that claim a value
nobody else holds, the record that holds it already keeps it, else the older write takes it
(its version, then domain and id by bytes: never the order of arrival), and the other waits.

A write still waiting when its school's sync is proven stands in a real conflict of the
source: the coordinator's sweep quarantines it as ``unique_conflict``, naming the holder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from shared.catalog.tables import UNIQUE_KEYS
from shared.ledger.keys import RecordKey, Ref, record_key
from shared.ledger.versions import version_of
from shared.wire.messages import MappedRecord

#: A unique key's value: (table, columns, values as text).
Claim = tuple[str, tuple[str, ...], tuple[str, ...]]
#: What a waiting write's reference is filed under (``parked_refs.ref_table``) for a unique
#: value held by a row of ``table``: never a table's name, so nothing mistakes it for a parent.
WAIT_PREFIX = "unique:"


def wait_ref(table: str, row_id: str) -> Ref:
    """The reference a write waiting for the row ``table``/``row_id`` to let go is parked with."""
    return (f"{WAIT_PREFIX}{table}", row_id)


def is_wait(ref_table: str) -> bool:
    return ref_table.startswith(WAIT_PREFIX)


#: Keys whose value is made from the record's own id (``shared.catalog.ids``): no other record's row
#: can claim it, so no write waits for it.
_OWN: frozenset[tuple[str, tuple[str, ...]]] = frozenset(
    {("students", ("user_id",)), ("teachers", ("user_id",)), ("private_lesson_payment_obligations", ("lesson_id",))}
)


def claims(record: MappedRecord) -> dict[Claim, tuple[str, str]]:
    """The unique values the record's rows claim, each with the (table, row id) claiming it.
    A key with a NULL column claims nothing (NULLs are distinct)."""
    out: dict[Claim, tuple[str, str]] = {}
    for row in record.rows:
        for columns in UNIQUE_KEYS.get(row.table, ()):
            if (row.table, columns) in _OWN:
                continue
            values = [record.school_id if c == "school_id" else row.values.get(c) for c in columns]
            if any(v is None for v in values):
                continue
            out[(row.table, columns, tuple(str(v) for v in values))] = (row.table, str(row.values["id"]))
    return out


@dataclass(frozen=True)
class Held:
    """A live row in the tables that holds a claimed value."""

    claim: Claim
    table: str
    row_id: str
    key: RecordKey  # its record


@dataclass
class Settlement:
    ready: list[MappedRecord] = field(default_factory=list)
    """Writes that may be written now (their values are theirs once the step is written)."""
    waiting: list[tuple[MappedRecord, set[Ref]]] = field(default_factory=list)
    """Writes that wait, each with the rows (:func:`wait_ref`) holding what it claims."""


def _precedence(record: MappedRecord) -> tuple[object, ...]:
    return (version_of(record), record.domain.value.encode(), record.legacy_id.encode())


def settle(records: Sequence[MappedRecord], held: Iterable[Held], gone: Iterable[RecordKey] = ()) -> Settlement:
    """Which of a step's ``records`` (at most one write of content per record, each one that
    will be live) may be written, given the live rows ``held`` that hold values they claim,
    and the records the step leaves deleted (``gone``: their rows hold nothing).

    Found as a fixpoint over sets, so the answer is the same in any order of ``records``:
    of the writes not yet found blocked, the ties are settled first (a record whose row
    holds a value keeps it; then each write in precedence order takes what no earlier one
    took, and a write that finds a value taken waits for the row taking it); then each
    remaining write that claims a value a row of a record outside them holds (one not in
    the step, or one that waits: its current row stays) is blocked, waiting for that row.
    Until no write is newly blocked. A write blocked stays so; the ties are settled again
    each round among the rest (a write that lost to one now blocked may take the value)."""
    buried = set(gone)
    holders: dict[Claim, list[Held]] = {}
    for h in held:
        if h.key not in buried:
            holders.setdefault(h.claim, []).append(h)
    claimed = [(r, record_key(r), claims(r)) for r in records]
    # The common case (a bulk load: each value claimed once, held by nobody else) at once.
    owner: dict[Claim, RecordKey] = {}
    if all(
        owner.setdefault(c, key) == key and all(h.key == key for h in holders.get(c, ()))
        for _, key, mine in claimed
        for c in mine
    ):
        return Settlement(ready=list(records))
    blocked: dict[int, set[Ref]] = {}
    while True:
        active = [i for i in range(len(claimed)) if i not in blocked]
        taken: dict[Claim, tuple[RecordKey, tuple[str, str]]] = {}
        for i in active:  # a record whose row holds a value it claims again keeps it
            _, key, mine = claimed[i]
            for claim, row in mine.items():
                if any(h.key == key for h in holders.get(claim, ())):
                    taken[claim] = (key, row)
        losers: dict[int, set[Ref]] = {}
        for i in sorted(active, key=lambda i: _precedence(claimed[i][0])):
            _, key, mine = claimed[i]
            lost = {wait_ref(*taken[c][1]) for c in mine if c in taken and taken[c][0] != key}
            if lost:
                losers[i] = lost
            else:
                for claim, row in mine.items():
                    taken.setdefault(claim, (key, row))
        writing = {claimed[i][1] for i in active if i not in losers}
        added: dict[int, set[Ref]] = {}
        for i in active:
            if i in losers:
                continue
            for claim in claimed[i][2]:
                standing = [h for h in holders.get(claim, ()) if h.key not in writing]
                if standing:
                    added.setdefault(i, set()).update(wait_ref(h.table, h.row_id) for h in standing)
        if not added:
            break
        blocked.update(added)
    waits = {**losers, **blocked}
    # Each waits for the rows that hold its values once the step is written (a write blocked
    # in an early round may have named a row that moves away in a later one).
    final: dict[Claim, set[Ref]] = {}
    ready_keys = {claimed[i][1] for i in range(len(claimed)) if i not in waits}
    for i in range(len(claimed)):
        if i not in waits:
            for claim, row in claimed[i][2].items():
                final.setdefault(claim, set()).add(wait_ref(*row))
    for claim, held_by in holders.items():
        if claim not in final:
            final[claim] = {wait_ref(h.table, h.row_id) for h in held_by if h.key not in ready_keys}
    for i in waits:
        own = {wait_ref(*row) for row in claimed[i][2].values()}
        now = {ref for claim in claimed[i][2] for ref in final.get(claim, ()) if ref not in own}
        waits[i] = now or waits[i]
    return Settlement(
        ready=[r for i, (r, _, _) in enumerate(claimed) if i not in waits],
        waiting=[(r, waits[i]) for i, (r, _, _) in enumerate(claimed) if i in waits],
    )
