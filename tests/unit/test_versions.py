"""Which write of a record wins (``shared.ledger.versions``), and the loader's choice within one batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from services.loader.parking import newest_per_record
from shared.catalog.domains import Domain
from shared.ledger.keys import record_key
from shared.ledger.versions import Version, is_delete, is_deleted, judge, snapshot_version, version_of, wins
from shared.wire.messages import ChangeMeta, ChangeOp, MappedRecord, TargetRow

T = datetime(2025, 1, 1, tzinfo=UTC)


def write(ts: datetime, client: str = "", seq: int = 0, op: ChangeOp = ChangeOp.UPDATE, amount: int = 1) -> MappedRecord:
    change = None if not client else ChangeMeta(op=op, client_id=client, seq=seq, source_ts=ts)
    rows = [] if op is ChangeOp.DELETE else [TargetRow(table="payments", values={"id": "p", "amount": amount})]
    return MappedRecord(
        school_id="s",
        snapshot_id=change.change_id if change else "snap",
        domain=Domain.PAYMENTS,
        index=0,
        legacy_id="p1",
        source_ts=ts,
        rows=rows,
        change=change,
    )


def test_a_change_beats_a_snapshot_taken_at_the_same_instant() -> None:
    assert version_of(write(T, "a", 1)) > snapshot_version(T)
    assert wins(write(T, "a", 1), snapshot_version(T))
    assert not wins(write(T), Version(T, "a", 1))


def test_ties_the_same_snapshot_again_is_applied_the_same_change_again_is_not() -> None:
    assert wins(write(T), snapshot_version(T))  # a redelivered snapshot record: idempotent
    assert not wins(write(T, "a", 1), Version(T, "a", 1))  # the same change twice: once


def test_clients_at_one_instant_are_ordered_by_client_then_sequence() -> None:
    assert version_of(write(T, "b", 1)) > version_of(write(T, "a", 9))
    assert version_of(write(T, "a", 10)) > version_of(write(T, "a", 9))
    assert version_of(write(T + timedelta(microseconds=1), "a", 1)) > version_of(write(T, "z", 99))


writes = st.builds(
    write,
    ts=st.integers(0, 4).map(lambda s: T + timedelta(seconds=s)),
    client=st.sampled_from(["", "a", "b"]),
    seq=st.integers(1, 3),
    op=st.sampled_from([ChangeOp.UPDATE, ChangeOp.CREATE, ChangeOp.DELETE]),
    amount=st.integers(1, 5),
).map(lambda r: r if r.change is not None or r.rows else write(r.source_ts, amount=2))


@given(st.lists(writes, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_within_a_batch_the_same_writes_win_in_any_order(batch: list[MappedRecord], order: object) -> None:
    """One winner per record for the content and one for the deletion, whatever the order:
    the greatest version of each (a delete never hides a content write: soft delete)."""
    shuffled = list(batch)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    chosen = newest_per_record(batch)
    again = newest_per_record(shuffled)
    key = lambda r: (version_of(r), r.change is None, r.rows[0].values["amount"] if r.rows else 0)  # noqa: E731
    assert sorted(map(key, chosen)) == sorted(map(key, again)) or _equal_version_ties(batch)
    contents = [r for r in batch if r.rows]
    deletes = [r for r in batch if not r.rows]
    assert len(chosen) == bool(contents) + bool(deletes)
    if contents:
        assert max(version_of(r) for r in contents) == max(version_of(r) for r in chosen if r.rows)
    if deletes:
        assert max(version_of(r) for r in deletes) == max(version_of(r) for r in chosen if not r.rows)


def _equal_version_ties(batch: list[MappedRecord]) -> bool:
    """Two different writes under one version (a snapshot's records at one instant): which one
    a batch keeps is not defined (ingest refuses a change number reused with other content)."""
    seen: dict[tuple[Version, bool], set[int]] = {}
    for r in batch:
        seen.setdefault((version_of(r), bool(r.rows)), set()).add(r.rows[0].values["amount"] if r.rows else 0)
    return any(len(v) > 1 for v in seen.values())


held = st.none() | st.builds(
    Version,
    source_ts=st.integers(0, 4).map(lambda s: T + timedelta(seconds=s)),
    client_id=st.sampled_from(["", "a", "b"]),
    seq=st.integers(0, 3),
)


@given(st.lists(writes, min_size=1, max_size=6), held, held)
def test_judging_a_step_keeps_winners_tombstones_newest_deletions_and_counts_each_write_once(
    records: list[MappedRecord], content: Version | None, deletion: Version | None
) -> None:
    """``judge``: a write of content is kept exactly when it wins over the content held, a
    delete's tombstone exactly when it is newer than the deletion held; every write is
    counted once, and a kept write over a deleted record that beats its deletion revives it."""
    keys = [record_key(r) for r in records]
    held_content = {k: content for k in keys if content is not None}
    held_deletion = {k: deletion for k in keys if deletion is not None}
    judged = judge(records, keys, held_content, held_deletion)
    assert judged.keep == [r for r in records if not is_delete(r) and wins(r, content)]
    assert judged.stale == [r for r in records if not is_delete(r) and not wins(r, content)]
    assert judged.tombstones == [r for r in records if is_delete(r) and (deletion is None or version_of(r) > deletion)]
    assert sum(judged.tally.values()) == len(records)
    deleted_now = is_deleted(content, deletion) or (deletion is not None and content == deletion)
    revivals = [r for r in judged.keep if deleted_now and version_of(r) > deletion]  # type: ignore[operator]
    assert judged.tally["revived"] == len(revivals)
