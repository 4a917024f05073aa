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
