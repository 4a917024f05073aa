"""The mapping rules: pure functions from one source record to target rows, and back.

Shared: the transform maps forward; the loader reverses to quarantine a refused record as
it was; the validator reverses what the database holds to compare it with the source.

One module per domain, each a :class:`~shared.mapping.engine.DomainMapping`:
``map`` gives the rows, parents first, as plain JSON-ready dicts (or raises
:class:`~shared.mapping.parsing.Reject`); ``reverse`` rebuilds the source record
from them exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from shared.catalog.domains import Domain
from shared.mapping import (
    assessments,
    attendance,
    classes,
    classrooms,
    grades,
    payment_obligations,
    payments,
    private_lessons,
    students,
    teachers,
)
from shared.mapping.engine import Context, DomainMapping, Row
from shared.mapping.parsing import Reject

MAPPINGS: dict[Domain, DomainMapping] = {
    Domain.STUDENTS: students.MAPPING,
    Domain.TEACHERS: teachers.MAPPING,
    Domain.CLASSROOMS: classrooms.MAPPING,
    Domain.CLASSES: classes.MAPPING,
    Domain.PAYMENT_OBLIGATIONS: payment_obligations.MAPPING,
    Domain.PAYMENTS: payments.MAPPING,
    Domain.ATTENDANCE: attendance.MAPPING,
    Domain.ASSESSMENTS: assessments.MAPPING,
    Domain.GRADES: grades.MAPPING,
    Domain.PRIVATE_LESSONS: private_lessons.MAPPING,
}


@dataclass(frozen=True)
class Mapped:
    rows: list[Row]


@dataclass(frozen=True)
class Rejected:
    reason: str
    message: str


def map_record(
    domain: Domain,
    school_id: str,
    legacy_id: str,
    record: dict[str, Any],
    hints: dict[str, str] | None = None,
    default_ts: str | None = None,
    *,
    zone: tzinfo | None,
) -> Mapped | Rejected:
    """``zone``: the school's time zone (``shared.catalog.timezones``), in which a moment written into
    a date-only field is read."""
    try:
        return Mapped(MAPPINGS[domain].map(school_id, legacy_id, record, Context(zone, hints or {}), default_ts))
    except Reject as rejection:
        return Rejected(rejection.reason, rejection.message)


def reverse_record(domain: Domain, rows: list[Row]) -> dict[str, Any]:
    """The source record the rows were made from, exactly."""
    return MAPPINGS[domain].reverse(rows)
