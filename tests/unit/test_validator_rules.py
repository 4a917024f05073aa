"""The validator's pure parts: the canonical text both sides hash, and the record diff."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from services.validator.checks import diff_record, record_issues
from services.validator.digest import canonical_text, combine, row_digest
from services.validator.expected import ExpectedRecord
from shared.catalog.domains import Domain
from shared.mapping import map_record
from shared.wire.messages import DomainValidation


def test_jsonb_text_follows_postgresql_key_order_and_spacing() -> None:
    value = {"bb": 1, "a": [1.5, "x\n", None, True], "ab": {}, "é": "ü"}
    # jsonb orders keys by byte length, then bytes: "a", "ab", "bb", "é" (two bytes, after "a" by bytes).
    assert canonical_text("jsonb", value) == '{"a": [1.5, "x\\n", null, true], "ab": {}, "bb": 1, "é": "ü"}'


def test_values_print_the_same_from_the_mapping_and_from_asyncpg() -> None:
    assert canonical_text("numeric", "850") == canonical_text("numeric", Decimal("850.00")) == "850"
    assert canonical_text("numeric", "3.80") == canonical_text("numeric", Decimal("3.8")) == "3.8"
    assert canonical_text("numeric", 0) == "0"
    stamp = datetime(2024, 1, 8, 9, 30, tzinfo=UTC)
    assert canonical_text("timestamptz", "2024-01-08T09:30:00.000Z") == canonical_text("timestamptz", stamp)
    assert canonical_text("timestamptz", "2024-01-08T11:30:00+02:00") == "2024-01-08 09:30:00.000000"
    assert canonical_text("date", "2024-01-08") == canonical_text("date", date(2024, 1, 8))
    assert canonical_text("time", "09:00:00") == canonical_text("time", time(9)) == "09:00:00.000000"
    assert canonical_text("bool", True) == "true"


def test_digests_are_order_free_over_rows_and_injective_over_columns() -> None:
    assert combine(["b", "a"]) == combine(["a", "b"])
    a = {
        "id": "0d7e3a8e-0000-5000-8000-000000000000",
        "school_id": "s",
        "legacy_id": "x",
        "extras": {},
        "name": "ab",
        "location": "c",
    }
    b = {**a, "name": "a", "location": "bc"}  # the same characters, split elsewhere
    assert row_digest("classrooms", a) != row_digest("classrooms", b)
    assert row_digest("classrooms", a) == row_digest("classrooms", {**a, "source_ts": "2030-01-01T00:00:00Z"})


def _student() -> ExpectedRecord:
    source = {
        "id": "student-1",
        "name": "Ана",
        "email": "a@x",
        "status": "active",
        "joinDate": "2024-01-01",
        "dateOfBirth": "2010-01-01",
    }
    mapped = map_record(Domain.STUDENTS, "s", "student-1", source, {}, "2024-06-01T00:00:00+00:00", zone=UTC)
    rows = [(table, {**values, "school_id": "s", "legacy_id": "student-1"}) for table, values in mapped.rows]  # type: ignore[union-attr]
    return ExpectedRecord("student-1", source, rows)


def test_a_changed_field_is_named_in_the_schools_terms() -> None:
    expected = _student()
    actual = [(table, dict(values)) for table, values in expected.rows]
    actual[0][1]["name"] = "Someone"
    diff = diff_record(Domain.STUDENTS, expected, actual)
    [found] = record_issues(Domain.STUDENTS, "student-1", diff)
    assert found.type == "data_mismatch"
    assert [(f.field, f.source, f.database) for f in found.fields] == [("name", "Ана", "Someone")]


def test_a_missing_child_row_is_named_by_table_and_id() -> None:
    expected = _student()
    diff = diff_record(Domain.STUDENTS, expected, expected.rows[:1])
    assert not diff.equal
    assert [f.field.split("[")[0] for f in diff.column_fields] == ["students"]


def test_equal_rows_that_only_print_differently_are_not_an_issue() -> None:
    expected = _student()
    diff = diff_record(Domain.STUDENTS, expected, [(t, dict(v)) for t, v in expected.rows])
    assert diff.equal and record_issues(Domain.STUDENTS, "student-1", diff) == []


def test_the_published_result_is_bounded_and_names_fields_without_values() -> None:
    from services.validator.checks import issue
    from shared.wire.messages import FieldDifference, ValidationCompleted

    many = [issue("name_mismatch", Domain.GRADES, "differs", f"grade-{n}") for n in range(500)]
    secret = issue(
        "data_mismatch", Domain.GRADES, "differs", "grade-x", [FieldDifference(field="comments", source="a@x", database="b@x")]
    )
    result = ValidationCompleted(
        run_id="r",
        school_id="s",
        snapshot_id="n",
        ok=False,
        domains=[DomainValidation(domain=Domain.GRADES, total_records=600, valid_records=99, issues=[*many, secret])],
    )
    published = result.for_publishing(max_issues_per_domain=20)
    [grades] = published.domains
    assert len(grades.issues) == 20 and grades.issues_omitted == 481
    assert grades.issues[0].type == "data_mismatch"  # the most severe first
    assert grades.issue_counts == {"name_mismatch": 500, "data_mismatch": 1}
    assert "a@x" not in published.model_dump_json() and "comments" in published.model_dump_json()
    assert len(published.model_dump_json()) < 20_000


@given(
    source=st.integers(0, 20),
    created=st.integers(0, 10),
    quarantined=st.integers(0, 5),
    missing=st.integers(0, 5),
    conflicts=st.lists(st.booleans(), max_size=3),
)
def test_valid_never_exceeds_total_and_every_listed_issue_is_counted(
    source: int, created: int, quarantined: int, missing: int, conflicts: list[bool]
) -> None:
    """Records changes created count in the total; issue_counts is filled whenever issues are
    listed; a held data conflict is critical until accepted, then a warning."""
    from services.validator.checks import DigestComparison, DomainFacts, validate_domain
    from shared.ledger.accounting import DomainCounts

    expected = max(source - quarantined, 0) + created
    facts = DomainFacts(
        DomainCounts(source=source, loaded=max(source - quarantined, 0), quarantined=min(quarantined, source)),
        expected=expected,
        comparison=DigestComparison([f"m{i}" for i in range(min(missing, expected))], [], []),
        data_conflicts=[
            {
                "domain": "students",
                "legacy_id": f"s{i}",
                "snapshot_id": f"chg.web.{i}",
                "reason": "unique_conflict",
                "message": "held by students/s9",
                "actor": "ops" if accepted else None,
                "accepted_reason": "typo" if accepted else None,
            }
            for i, accepted in enumerate(conflicts)
        ],
    )
    result = validate_domain(Domain.STUDENTS, facts)
    assert result.valid_records <= result.total_records
    assert result.total_records >= source
    counted: dict[str, int] = {}
    for i in result.issues:
        counted[i.type] = counted.get(i.type, 0) + 1
    assert result.issue_counts == counted
    severities = [i.severity.value for i in result.issues if "conflict" in i.type]
    assert severities == ["warning" if accepted else "critical" for accepted in conflicts]
