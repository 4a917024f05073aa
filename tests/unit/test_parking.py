from datetime import UTC, datetime

from services.loader.parking import newest_per_record, plan, references
from shared.catalog.domains import Domain
from shared.catalog.ids import row_id_text
from shared.wire.messages import MappedRecord, TargetRow

TS = datetime(2024, 1, 1, tzinfo=UTC)


def rec(domain: Domain, legacy: str, table: str, refs: dict[str, str], ts: datetime = TS) -> MappedRecord:
    values = {"id": row_id_text("s", table, legacy), **refs}
    return MappedRecord(
        school_id="s",
        snapshot_id="x",
        domain=domain,
        index=0,
        legacy_id=legacy,
        source_ts=ts,
        rows=[TargetRow(table=table, values=values)],
    )


OBLIGATION = rec(Domain.PAYMENT_OBLIGATIONS, "o1", "payment_obligations", {"student_id": row_id_text("s", "students", "s1")})
PAYMENT = rec(Domain.PAYMENTS, "p1", "payments", {"obligation_id": row_id_text("s", "payment_obligations", "o1")})
STUDENT = rec(Domain.STUDENTS, "s1", "students", {"class_id": None})  # type: ignore[dict-item]


def test_references_follow_the_catalogue() -> None:
    assert references(PAYMENT) == {("payment_obligations", row_id_text("s", "payment_obligations", "o1"))}
    assert references(STUDENT) == set()


def test_a_child_before_its_parent_waits_and_so_do_its_own_children() -> None:
    result = plan([PAYMENT, OBLIGATION], existing=set())
    assert result.ready == []
    assert {r.legacy_id for r, _ in result.parked} == {"p1", "o1"}  # o1 waits for s1, p1 for o1 (cascade)


def test_a_parent_in_the_same_batch_or_already_stored_releases_the_child() -> None:
    assert [r.legacy_id for r in plan([PAYMENT, OBLIGATION, STUDENT], existing=set()).ready] == ["p1", "o1", "s1"]
    stored = {("students", row_id_text("s", "students", "s1"))}
    result = plan([PAYMENT, OBLIGATION], existing=stored)
    assert [r.legacy_id for r in result.ready] == ["p1", "o1"] and result.parked == []


def test_the_newest_version_of_a_record_wins_within_a_batch() -> None:
    newer = rec(Domain.PAYMENTS, "p1", "payments", {"obligation_id": "x"}, ts=datetime(2024, 2, 1, tzinfo=UTC))
    assert newest_per_record([PAYMENT, newer]) == [newer]
    assert newest_per_record([newer, PAYMENT]) == [newer]
