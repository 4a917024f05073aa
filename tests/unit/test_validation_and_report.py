from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from schoolmig.runner import Job, plan_rounds, school_from_filename
from services.loader.convert import rows_by_table
from services.validator.checks import DomainFacts, compare_digests, validate
from services.validator.severity import ISSUE_TYPES, SEVERITY
from shared.catalog.domains import ALL_DOMAINS, Domain
from shared.ledger.accounting import DomainCounts
from shared.ledger.report import run_report, school_report
from shared.wire.messages import MappedRecord, Severity, TargetRow


def test_clean_facts_validate_ok_with_quarantine_as_a_warning() -> None:
    facts = DomainFacts(DomainCounts(5, 4, 1), expected=4, quarantine_reasons=Counter({"missing_required": 1}))
    ok, results = validate({Domain.STUDENTS: facts})
    assert ok
    students = next(r for r in results if r.domain is Domain.STUDENTS)
    assert (students.total_records, students.valid_records) == (5, 4)
    assert [(i.type, i.severity) for i in students.issues] == [("quarantined", Severity.WARNING)]
    assert "missing_required 1" in students.issues[0].message
    assert len(results) == len(ALL_DOMAINS)


def test_unaccounted_missing_and_unexpected_records_are_critical() -> None:
    comparison = compare_digests(
        {"student-1": "a", "student-2": "b", "student-3": "c"}, {"student-1": "a", "student-3": "x", "student-9": "d"}
    )
    assert (comparison.missing, comparison.unexpected, comparison.differing) == (["student-2"], ["student-9"], ["student-3"])
    facts = DomainFacts(DomainCounts(5, 3, 1), expected=3, comparison=comparison)
    ok, results = validate({Domain.STUDENTS: facts})
    assert not ok
    issues = {(i.type, i.record_id, i.severity) for r in results for i in r.issues}
    assert ("count_mismatch", None, Severity.CRITICAL) in issues
    assert ("missing_record", "student-2", Severity.CRITICAL) in issues
    assert ("unexpected_record", "student-9", Severity.CRITICAL) in issues


def test_every_issue_type_has_one_severity_and_a_meaning() -> None:
    assert set(SEVERITY) == set(ISSUE_TYPES)
    assert all(meaning for _, meaning in ISSUE_TYPES.values())
    assert SEVERITY["name_mismatch"] is Severity.INFO and SEVERITY["data_mismatch"] is Severity.CRITICAL


def test_report_contract() -> None:
    counts = {Domain.STUDENTS: DomainCounts(3, 2, 1)}
    school = school_report(
        school_id="a",
        snapshot_id="s",
        phase="validated",
        counts=counts,
        quarantine=[{"domain": "students", "legacy_id": "student-9", "reason": "missing_required", "stage": "transform"}],
        validation={"ok": True},
    )
    assert set(school["domains"]) == {d.value for d in ALL_DOMAINS}
    assert school["domains"]["students"] == {"source": 3, "loaded": 2, "quarantined": 1}
    assert school["domains"]["grades"] == {"source": 0, "loaded": 0, "quarantined": 0}
    assert school["quarantine"] == [{"domain": "students", "legacy_id": "student-9", "reason": "missing_required"}]
    assert run_report([school])["ok"] is True
    unaccounted = school_report(
        school_id="a",
        snapshot_id="s",
        phase="dual_write",
        counts={Domain.STUDENTS: DomainCounts(3, 1, 1)},
        quarantine=[],
        validation=None,
    )
    assert run_report([school, unaccounted])["ok"] is False
    assert run_report([])["ok"] is False


def _record(snapshot: str, ts: datetime, name: str) -> MappedRecord:
    return MappedRecord(
        school_id="a",
        snapshot_id=snapshot,
        domain=Domain.STUDENTS,
        index=0,
        legacy_id="student-1",
        source_ts=ts,
        rows=[
            TargetRow(
                table="users",
                values={"id": "9f88a847-a4c4-5592-a191-3169ecccdac5", "name": name, "school_id": "a", "legacy_id": "student-1"},
            )
        ],
    )


def test_a_batch_keeps_one_row_per_id_and_the_newest_write_wins() -> None:
    old, new = datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)
    for order in ([_record("s1", old, "Old"), _record("s2", new, "New")], [_record("s2", new, "New"), _record("s1", old, "Old")]):
        [row] = rows_by_table(order)["users"]
        assert "New" in row and "s2" in row


def test_run_rounds_keep_one_schools_files_apart() -> None:
    rounds = plan_rounds([Path("a.json"), Path("b.json")], "school-x")
    assert rounds == [[Job("school-x", Path("a.json"))], [Job("school-x", Path("b.json"))]]
    rounds = plan_rounds([Path("demo/school-1.json"), Path("demo/school-2.json")], None)
    assert rounds == [[Job("school-1", Path("demo/school-1.json")), Job("school-2", Path("demo/school-2.json"))]]
    assert school_from_filename(Path("My School (2024).json")) == "My-School--2024"


def test_one_schools_files_go_oldest_reading_first(tmp_path: Path) -> None:
    import os

    tablet, office = tmp_path / "tablet.json", tmp_path / "office.json"
    for path, day in ((tablet, 3), (office, 1)):
        path.write_text("{}")
        moment = datetime(2024, 9, day, tzinfo=UTC).timestamp()
        os.utime(path, (moment, moment))
    rounds = plan_rounds([tablet, office], "school-x")
    assert [job.path for [job] in rounds] == [office, tablet]  # by modification time, not as given


def test_nul_is_shown_escaped_wherever_postgres_text_would_refuse_it() -> None:
    from shared.platform.db import pg_json, pg_text

    assert pg_text("a\x00b") == "a\\u0000b" and pg_text("plain") == "plain" and pg_text(None) is None
    assert pg_json({"k\x00": ["v\x00", 1, None, {"x": "\x00"}]}) == {"k\\u0000": ["v\\u0000", 1, None, {"x": "\\u0000"}]}
