"""The validation rules, over facts already read. Pure.

Per domain, the plan's ``DataValidationResult``: ``total_records`` (the source's),
``valid_records`` (in the tables exactly as the source maps to) and the ``issues``, each
typed and graded by the one table in ``services.validator.severity``.

A record is compared in two steps: digests first (``digest.py``, computed where the rows
are), then, only for records whose digests differ, field by field: in the school's terms
through the reverse mapping (``email``, ``status``...) and, where the reverse cannot
say, column by column.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from services.validator.digest import canonical_text, compared_columns
from services.validator.expected import ExpectedRecord
from services.validator.severity import SEVERITY
from shared.catalog.domains import ALL_DOMAINS, Domain
from shared.catalog.tables import TABLES
from shared.ledger.accounting import DomainCounts
from shared.mapping import reverse_record
from shared.wire.messages import CHANGE_ID_PREFIX, DomainValidation, FieldDifference, Severity, ValidationIssue

ActualRow = tuple[str, dict[str, Any]]
OBLIGATION_TABLES = frozenset({"payment_obligations", "private_lesson_payment_obligations"})


def issue(
    kind: str, domain: Domain, message: str, record_id: str | None = None, fields: list[FieldDifference] | None = None
) -> ValidationIssue:
    return ValidationIssue(
        type=kind, severity=SEVERITY[kind], domain=domain, record_id=record_id, message=message, fields=fields or []
    )


@dataclass(frozen=True)
class DigestComparison:
    missing: list[str]
    unexpected: list[str]
    differing: list[str]


def compare_digests(expected: Mapping[str, str], actual: Mapping[str, str]) -> DigestComparison:
    """Which records are missing, unexpected, or differ, by their digests."""
    return DigestComparison(
        missing=sorted(expected.keys() - actual.keys()),
        unexpected=sorted(actual.keys() - expected.keys()),
        differing=sorted(k for k in expected.keys() & actual.keys() if expected[k] != actual[k]),
    )


@dataclass(frozen=True)
class RecordDiff:
    source_fields: list[FieldDifference]  # in the school's terms, from the reverse mapping
    column_fields: list[FieldDifference]  # table.column, canonical text
    status_fields: list[FieldDifference]  # an obligation's status

    @property
    def equal(self) -> bool:
        return not self.column_fields and not self.status_fields


def diff_record(domain: Domain, expected: ExpectedRecord, actual: list[ActualRow]) -> RecordDiff:
    columns: list[FieldDifference] = []
    status: list[FieldDifference] = []
    present = {(table, str(values["id"])): values for table, values in actual}
    wanted = {(table, str(values["id"])) for table, values in expected.rows}
    for table, values in expected.rows:
        got = present.get((table, str(values["id"])))
        if got is None:
            columns.append(FieldDifference(field=f"{table}[{values['id']}]", source="present", database="absent"))
            continue
        for _, name, kind in compared_columns(TABLES[table]):
            want = None if values.get(name) is None else canonical_text(kind, values[name])
            have = None if got.get(name) is None else canonical_text(kind, got[name])
            if want != have:
                difference = FieldDifference(field=f"{table}.{name}", source=want, database=have)
                (status if name == "status" and table in OBLIGATION_TABLES else columns).append(difference)
    for table, row_id in sorted(present.keys() - wanted):
        columns.append(FieldDifference(field=f"{table}[{row_id}]", source="absent", database="present"))
    return RecordDiff(_source_fields(domain, expected.source, actual), columns, status)


def _source_fields(domain: Domain, source: dict[str, Any], actual: list[ActualRow]) -> list[FieldDifference]:
    try:
        rebuilt = reverse_record(domain, actual)
    except Exception:  # rows too damaged to rebuild a record from: the column diff says what
        return []
    return [
        FieldDifference(field=key, source=source.get(key), database=rebuilt.get(key))
        for key in sorted(source.keys() | rebuilt.keys())
        if key not in source or key not in rebuilt or source[key] != rebuilt[key] or type(source[key]) is not type(rebuilt[key])
    ]


def record_issues(domain: Domain, legacy_id: str, diff: RecordDiff) -> list[ValidationIssue]:
    found: list[ValidationIssue] = []
    if diff.status_fields:
        found.append(
            issue("status_mismatch", domain, "the obligation's status differs from the source", legacy_id, diff.status_fields)
        )
    if diff.column_fields:
        described = [f for f in diff.source_fields if f.field != "status" or not diff.status_fields] or diff.column_fields
        names = ", ".join(f.field for f in described)
        found.append(issue("data_mismatch", domain, f"differs from the source in: {names}", legacy_id, described))
    return found


@dataclass
class DomainFacts:
    """What was read about one domain of one school, ready to be judged."""

    counts: DomainCounts
    expected: int  # records the source says belong in the tables (mapped, not quarantined)
    comparison: DigestComparison = field(default_factory=lambda: DigestComparison([], [], []))
    diffs: dict[str, RecordDiff] = field(default_factory=dict)
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    duplicate_ids: list[str] = field(default_factory=list)
    broken_references: list[tuple[str, str, str]] = field(default_factory=list)  # legacy id, table.column, ref id
    duplicated_keys: list[tuple[str, list[str]]] = field(default_factory=list)  # table(columns), legacy ids
    name_mismatches: list[dict[str, Any]] = field(default_factory=list)
    orphans_with_parents: list[str] = field(default_factory=list)  # legacy ids quarantined as orphans wrongly
    data_conflicts: list[dict[str, Any]] = field(default_factory=list)  # shared.ledger.quarantine.data_conflicts


def validate_domain(domain: Domain, facts: DomainFacts) -> DomainValidation:
    issues: list[ValidationIssue] = []
    c = facts.counts
    if not c.settled:
        issues.append(
            issue(
                "count_mismatch",
                domain,
                f"source {c.source}, loaded {c.loaded} + quarantined {c.quarantined} = {c.loaded + c.quarantined}",
            )
        )
    for legacy_id in facts.comparison.missing:
        issues.append(issue("missing_record", domain, "the source maps it to rows that are not in the tables", legacy_id))
    for legacy_id in facts.comparison.unexpected:
        issues.append(issue("unexpected_record", domain, "in the tables, but not in the snapshot (or quarantined)", legacy_id))
    wrong = 0
    for legacy_id, diff in sorted(facts.diffs.items()):
        found = record_issues(domain, legacy_id, diff)
        wrong += bool(found)
        issues.extend(found)
    for legacy_id, column, ref in facts.broken_references:
        issues.append(issue("orphaned_reference", domain, f"{column} = {ref} does not resolve", legacy_id))
    for legacy_id in facts.orphans_with_parents:
        issues.append(
            issue("orphan_with_parent", domain, "quarantined as an orphan, but its parents are in the tables", legacy_id)
        )
    for conflict in facts.data_conflicts:
        where = "change " + conflict["snapshot_id"] if conflict["snapshot_id"].startswith(CHANGE_ID_PREFIX) else "snapshot"
        if conflict["actor"] is None:
            issues.append(
                issue("data_conflict", domain, f"{conflict['reason']} ({where}): {conflict['message']}", conflict["legacy_id"])
            )
        else:
            accepted = f"accepted by {conflict['actor']}: {conflict['accepted_reason']}"
            issues.append(
                issue("accepted_conflict", domain, f"{conflict['reason']} ({where}), {accepted}", conflict["legacy_id"])
            )
    for key, ids in facts.duplicated_keys:
        issues.append(issue("unique_violation", domain, f"{key} shared by {', '.join(ids)}", ids[0]))
    for legacy_id in facts.duplicate_ids:
        issues.append(issue("duplicate_id", domain, "the id repeats in the source; the first record is migrated", legacy_id))
    if facts.quarantine_reasons:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(facts.quarantine_reasons.items()))
        issues.append(issue("quarantined", domain, f"{c.quarantined} record(s) in quarantine: {reasons}"))
    for finding in facts.name_mismatches:
        issues.append(
            issue(
                "name_mismatch",
                domain,
                f"{finding.get('field')} differs from {finding.get('ref_domain')}/{finding.get('ref_id')}",
                finding.get("record_id"),
            )
        )
    valid = facts.expected - len(facts.comparison.missing) - wrong
    # The records judged: the snapshot's, or more when changes or other devices add records
    # the tables are expected to hold (valid never exceeds it).
    total = max(c.source, facts.expected + c.quarantined)
    return DomainValidation(domain=domain, total_records=total, valid_records=max(valid, 0), issues=issues)


def validate(facts: Mapping[Domain, DomainFacts]) -> tuple[bool, list[DomainValidation]]:
    """(ok, per-domain results); ok means no critical issue in any domain."""
    results = [validate_domain(d, facts.get(d, DomainFacts(DomainCounts(), 0))) for d in ALL_DOMAINS]
    ok = not any(i.severity is Severity.CRITICAL for r in results for i in r.issues)
    return ok, results
