"""The mapping rules: pure functions from one source record to target rows.

One module per domain. Each mapper takes ``(school_id, legacy_id, record)`` and returns
the target rows, parents first, as plain JSON-ready dicts; it raises
:class:`~services.transform.parsing.Reject` when the record cannot be mapped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.transform.mapping.students import map_student
from services.transform.parsing import Reject
from shared.domains import Domain

Row = tuple[str, dict[str, Any]]
Mapper = Callable[[str, str, dict[str, Any]], list[Row]]

MAPPERS: dict[Domain, Mapper] = {
    Domain.STUDENTS: map_student,
}


@dataclass(frozen=True)
class Mapped:
    rows: list[Row]


@dataclass(frozen=True)
class Rejected:
    reason: str
    message: str


def map_record(domain: Domain, school_id: str, legacy_id: str, record: dict[str, Any]) -> Mapped | Rejected:
    mapper = MAPPERS.get(domain)
    if mapper is None:
        return Rejected("unsupported_domain", f"no mapping for domain '{domain.value}' yet")
    try:
        return Mapped(mapper(school_id, legacy_id, record))
    except Reject as rejection:
        return Rejected(rejection.reason, rejection.message)
