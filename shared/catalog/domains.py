"""The ten source domains, where each lives in the browser, and how the files name them."""

from __future__ import annotations

from enum import StrEnum


class Domain(StrEnum):
    STUDENTS = "students"
    TEACHERS = "teachers"
    CLASSROOMS = "classrooms"
    CLASSES = "classes"
    PAYMENT_OBLIGATIONS = "payment_obligations"
    PAYMENTS = "payments"
    ATTENDANCE = "attendance"
    ASSESSMENTS = "assessments"
    GRADES = "grades"
    PRIVATE_LESSONS = "private_lessons"


ALL_DOMAINS: tuple[Domain, ...] = tuple(Domain)

#: localStorage key -> domain (raw localStorage dump).
LOCALSTORAGE_KEYS: dict[str, Domain] = {
    "students": Domain.STUDENTS,
    "teachers": Domain.TEACHERS,
    "classes": Domain.CLASSES,
    "classrooms": Domain.CLASSROOMS,
    "paymentObligations": Domain.PAYMENT_OBLIGATIONS,
    "payments": Domain.PAYMENTS,
    "attendance-records": Domain.ATTENDANCE,
    "assessments": Domain.ASSESSMENTS,
    "grades": Domain.GRADES,
    "privateLessons": Domain.PRIVATE_LESSONS,
}

#: MockDataService ``exportData()`` key -> domain. Note ``obligations``, not ``paymentObligations``.
EXPORT_KEYS: dict[str, Domain] = {
    "students": Domain.STUDENTS,
    "teachers": Domain.TEACHERS,
    "classes": Domain.CLASSES,
    "classrooms": Domain.CLASSROOMS,
    "obligations": Domain.PAYMENT_OBLIGATIONS,
    "payments": Domain.PAYMENTS,
}

#: Keys that describe the export rather than hold records; known, never reported as unknown.
METADATA_KEYS: frozenset[str] = frozenset({"mockDataMetadata", "lastUpdated", "version"})


#: Keys other versions of the front end may keep a domain under (a key moves between
#: versions): read as that domain, in either file format, and noted in the audit. The
#: default of ``SCHOOLMIG_KEY_ALIASES``; an operator adds a school's own with it.
DEFAULT_KEY_ALIASES: dict[str, Domain] = {
    "attendanceRecords": Domain.ATTENDANCE,
    "attendance_records": Domain.ATTENDANCE,
    "payment-obligations": Domain.PAYMENT_OBLIGATIONS,
    "payment_obligations": Domain.PAYMENT_OBLIGATIONS,
    "private-lessons": Domain.PRIVATE_LESSONS,
    "private_lessons": Domain.PRIVATE_LESSONS,
}


def keys_of(fmt_is_dump: bool, aliases: dict[str, Domain]) -> dict[str, Domain]:
    """Every key read as a domain in a file of that format: its own keys, the other format's
    (an export with ``grades``, a dump with ``obligations``), then the aliases; never one
    over a key of its own."""
    own, other = (LOCALSTORAGE_KEYS, EXPORT_KEYS) if fmt_is_dump else (EXPORT_KEYS, LOCALSTORAGE_KEYS)
    return {**{k: d for k, d in aliases.items() if k not in METADATA_KEYS}, **other, **own}
