"""The pre-migration audit (the plan's ``auditLocalStorageData`` and reference integrity
check), over one parsed snapshot. Pure.

Findings name records, fields and referents by id only: an audit is stored, published
and printed, so it never carries names, emails or phones.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from shared.catalog.domains import Domain
from shared.catalog.timezones import SchoolZone, same_zone
from shared.source.snapshot import ParsedSnapshot, fold
from shared.wire.messages import Severity

D = Domain


@dataclass(frozen=True)
class Finding:
    type: str
    severity: Severity
    domain: Domain | None  # None: a finding about a key of the file, not a domain's records
    record_id: str | None = None
    field: str | None = None
    ref_domain: Domain | None = None
    ref_id: str | None = None
    detail: str = ""

    def as_json(self) -> dict[str, Any]:
        return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(self).items() if v not in (None, "")}


#: Finding type -> severity. ``unreadable_value`` is critical: a whole localStorage value
#: cut short is records the migration cannot recover; an operator has to acknowledge it.
FINDING_SEVERITY: dict[str, Severity] = {
    "unreadable_value": Severity.CRITICAL,
    # Records under a key the migration does not read: left behind unless an operator maps
    # the key (SCHOOLMIG_KEY_ALIASES) or overrides the audit with a reason.
    "unmapped_data_key": Severity.CRITICAL,
    "aliased_key": Severity.INFO,
    "operator_key_mapping": Severity.INFO,  # an operator's map-key: who, why (the key's records: aliased_key)
    "corrupted_entry": Severity.WARNING,
    "duplicate_id": Severity.WARNING,
    "orphaned_reference": Severity.WARNING,
    "shared_email": Severity.WARNING,
    # A device reporting another time zone than the school's (shared.catalog.timezones): its dates are
    # read in the school's zone all the same.
    "device_timezone": Severity.WARNING,
    "name_mismatch": Severity.INFO,
    "count_mismatch": Severity.INFO,
    "membership_mismatch": Severity.INFO,
}


@dataclass(frozen=True)
class Reference:
    domain: Domain
    field: str  # dotted path for documentation: "teacher.id", "studentRecords[].studentId"
    target: Domain


#: Every reference field the source holds (the spec's record shapes).
REFERENCES: tuple[Reference, ...] = (
    Reference(D.STUDENTS, "classId", D.CLASSES),
    Reference(D.TEACHERS, "classIds[]", D.CLASSES),
    Reference(D.CLASSES, "teacher.id", D.TEACHERS),
    Reference(D.CLASSES, "roomId", D.CLASSROOMS),
    Reference(D.CLASSES, "studentIds[]", D.STUDENTS),
    Reference(D.PAYMENT_OBLIGATIONS, "studentId", D.STUDENTS),
    Reference(D.PAYMENTS, "obligationId", D.PAYMENT_OBLIGATIONS),
    Reference(D.PAYMENTS, "studentId", D.STUDENTS),
    Reference(D.ATTENDANCE, "classId", D.CLASSES),
    Reference(D.ATTENDANCE, "teacherId", D.TEACHERS),
    Reference(D.ATTENDANCE, "studentRecords[].studentId", D.STUDENTS),
    Reference(D.ASSESSMENTS, "classId", D.CLASSES),
    Reference(D.GRADES, "assessmentId", D.ASSESSMENTS),
    Reference(D.GRADES, "studentId", D.STUDENTS),
    Reference(D.PRIVATE_LESSONS, "studentId", D.STUDENTS),
    Reference(D.PRIVATE_LESSONS, "teacherId", D.TEACHERS),
    Reference(D.PRIVATE_LESSONS, "classroomId", D.CLASSROOMS),
)

#: Denormalised copies: (domain, id path, name path, referent domain, referent's field).
NAME_COPIES: tuple[tuple[Domain, str, str, Domain, str], ...] = (
    (D.CLASSES, "teacher.id", "teacher.name", D.TEACHERS, "name"),
    (D.CLASSES, "roomId", "room", D.CLASSROOMS, "name"),
    (D.PAYMENT_OBLIGATIONS, "studentId", "studentName", D.STUDENTS, "name"),
    (D.PAYMENTS, "studentId", "studentName", D.STUDENTS, "name"),
    (D.ATTENDANCE, "classId", "className", D.CLASSES, "name"),
    (D.ATTENDANCE, "teacherId", "teacherName", D.TEACHERS, "name"),
    (D.ATTENDANCE, "studentRecords[].studentId", "studentRecords[].studentName", D.STUDENTS, "name"),
    (D.ASSESSMENTS, "classId", "className", D.CLASSES, "name"),
    (D.GRADES, "studentId", "studentName", D.STUDENTS, "name"),
    (D.PRIVATE_LESSONS, "studentId", "studentName", D.STUDENTS, "name"),
    (D.PRIVATE_LESSONS, "teacherId", "teacherName", D.TEACHERS, "name"),
    (D.PRIVATE_LESSONS, "classroomId", "classroomName", D.CLASSROOMS, "name"),
)


def _finding(kind: str, domain: Domain | None, **kw: Any) -> Finding:
    return Finding(kind, FINDING_SEVERITY[kind], domain, **kw)


def _values(record: dict[str, Any], path: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(value, the object holding it) for a path like ``a.b`` or ``list[].field``."""
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = record.get(head[:-2])
        for item in items if isinstance(items, list) else []:
            if not rest:
                yield item, record
            elif isinstance(item, dict):
                yield from _values(item, rest)
        return
    value = record.get(head)
    if not rest:
        yield value, record
    elif isinstance(value, dict):
        yield from _values(value, rest)


def _ref_id(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    text = str(value).strip()
    return text or None


def audit_snapshot(parsed: ParsedSnapshot) -> list[Finding]:
    findings: list[Finding] = []
    for key, objects in sorted(parsed.unmapped_keys.items()):
        findings.append(
            _finding(
                "unmapped_data_key",
                None,
                field=key,
                detail=f"{objects} record(s) under a key the migration does not read: map it to a domain "
                "(SCHOOLMIG_KEY_ALIASES) or override the audit (schoolmig override-audit) to leave them behind",
            )
        )
    for key, domain in sorted(parsed.aliased_keys.items()):
        findings.append(_finding("aliased_key", domain, field=key, detail=f"read as {domain.value} (an alias)"))
    records = {domain: parsed.readable_records(domain) for domain in Domain}
    for domain, entries in parsed.entries.items():
        for entry in entries:
            if entry.problem is None:
                continue
            if entry.problem.reason == "duplicate_email":
                continue  # reported below as shared_email, with every holder
            if entry.problem.reason == "duplicate_id":
                findings.append(_finding("duplicate_id", domain, record_id=entry.legacy_id, detail=f"entry {entry.index}"))
            elif entry.index < 0:
                findings.append(_finding("unreadable_value", domain, detail=entry.problem.reason))
            else:
                findings.append(_finding("corrupted_entry", domain, detail=f"entry {entry.index}: {entry.problem.reason}"))

    room_by_name = parsed.classroom_ids_by_name()
    for ref in REFERENCES:
        targets = records[ref.target]
        for record_id, record in records[ref.domain].items():
            for value, _ in _values(record, ref.field):
                target = _ref_id(value)
                if ref.field == "roomId" and target is None:
                    # Older classes lack roomId: the classroom is the one whose name is `room`.
                    if fold(record.get("room")) and fold(record.get("room")) not in room_by_name:
                        findings.append(
                            _finding(
                                "orphaned_reference",
                                ref.domain,
                                record_id=record_id,
                                field="room",
                                ref_domain=ref.target,
                                detail="no classroom has this name",
                            )
                        )
                    continue
                if target is not None and target not in targets:
                    findings.append(
                        _finding(
                            "orphaned_reference",
                            ref.domain,
                            record_id=record_id,
                            field=ref.field,
                            ref_domain=ref.target,
                            ref_id=target,
                        )
                    )

    for domain, id_path, name_path, target_domain, target_field in NAME_COPIES:
        id_leaf, name_leaf = id_path.rsplit(".", 1)[-1], name_path.rsplit(".", 1)[-1]
        for record_id, record in records[domain].items():
            for value, holder in _values(record, id_path):
                referent = records[target_domain].get(_ref_id(value) or "")
                copy = holder.get(name_leaf) if id_leaf != name_leaf else None
                if referent is None or fold(copy) is None:
                    continue
                if fold(copy) != fold(referent.get(target_field)):
                    findings.append(
                        _finding(
                            "name_mismatch",
                            domain,
                            record_id=record_id,
                            field=name_path,
                            ref_domain=target_domain,
                            ref_id=_ref_id(value),
                        )
                    )

    for class_id, cls in records[D.CLASSES].items():
        ids = cls.get("studentIds")
        if isinstance(ids, list) and isinstance(cls.get("students"), int) and cls["students"] != len(ids):
            findings.append(
                _finding(
                    "count_mismatch",
                    D.CLASSES,
                    record_id=class_id,
                    field="students",
                    detail=f"says {cls['students']}, lists {len(ids)}",
                )
            )
        for student_id in ids if isinstance(ids, list) else []:
            student = records[D.STUDENTS].get(_ref_id(student_id) or "")
            if student is not None and _ref_id(student.get("classId")) != class_id:
                findings.append(
                    _finding(
                        "membership_mismatch",
                        D.STUDENTS,
                        record_id=_ref_id(student_id),
                        field="classId",
                        ref_domain=D.CLASSES,
                        ref_id=class_id,
                        detail="listed in the class's studentIds, classId differs",
                    )
                )

    people: dict[str, list[tuple[Domain, str]]] = defaultdict(list)
    for domain in (D.STUDENTS, D.TEACHERS):
        for record_id, record in records[domain].items():
            email = fold(record.get("email"))
            if email:
                people[email].append((domain, record_id))
    for holders in people.values():
        if len(holders) > 1:
            ids = ", ".join(f"{d.value}/{i}" for d, i in holders)
            for domain, record_id in holders:
                findings.append(
                    _finding("shared_email", domain, record_id=record_id, field="email", detail=f"same email as: {ids}")
                )
    return findings


def summarise(findings: list[Finding]) -> dict[str, int]:
    return dict(sorted(Counter(f.type for f in findings).items()))


def zone_findings(school_zone: SchoolZone, reported: dict[str, str]) -> list[Finding]:
    """A note for each device whose reported zone is not the school's."""
    return [
        Finding(
            "device_timezone",
            FINDING_SEVERITY["device_timezone"],
            None,
            field=device or "(unnamed device)",
            detail=f"reports {zone}; the school's dates are read in {school_zone.name} ({school_zone.source.value}). "
            "If that zone is wrong, the school's records need mapping again in the right one: schoolmig does not "
            "do that (set the zone before a school's first snapshot: schoolmig set-timezone)",
        )
        for device, zone in sorted(reported.items())
        if not same_zone(zone, school_zone.name)
    ]
