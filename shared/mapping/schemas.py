"""The source records a client sends, per domain, as JSON Schema: the field rules of the
mapping, for a client team that does not read Python.

One entry per key a domain's mapping reads (``shared.mapping.<domain>``), with what its
parser accepts (``shared.mapping.parsing``); the allowed values are the mapping's own
constants. ``tests/unit/test_record_schemas.py`` holds the two together: every key the mapping
keeps is here, a key marked required is refused when missing and no other is, and the
records the round-trip tests generate validate. Unknown keys are allowed: they are kept
(``extras``) and given back on export. ``make docs`` writes them to ``docs/schemas/``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.catalog.domains import Domain
from shared.mapping import assessments, attendance, classes, payment_obligations, payments, private_lessons, students
from shared.mapping.classes import DAYS
from shared.mapping.parsing import INT_MAX, numeric_max

AMOUNT_MAX = numeric_max(10, 2)  # DECIMAL(10, 2), the rule the mappings apply

DATE_RULE = (
    "A calendar date. `YYYY-MM-DD` is taken as written: the app may already have shifted it with "
    "`toISOString().split('T')[0]`, which no value can show. An ISO datetime with an offset (the app's "
    "`toISOString()`, e.g. `2024-03-30T23:00:00.000Z`) is a moment: its calendar date in the school's time zone "
    "(an operator's, else the one its clients report, else SCHOOLMIG_DEFAULT_TIMEZONE); a local midnight under "
    "either offset of a DST day is that day. A datetime without an offset is taken as written. Also read: "
    "`DD.MM.YYYY`, `YYYY/MM/DD`, and `DD/MM/YYYY` when day and month cannot be swapped (`03/04/2024` is refused, "
    "never guessed). The exact string is kept and given back on export."
)
TIMESTAMP_RULE = (
    "A moment (ISO 8601, e.g. `new Date().toISOString()`); a naive one is UTC. Never refused: one that cannot be "
    "read is kept as written, and the column gets the school's first snapshot's time."
)


def _any_case(values: frozenset[str] | list[str]) -> str:
    """A pattern matching one of ``values`` in any case, with space around (as ``parsing.enum`` reads)."""
    words = ["".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in v) for v in sorted(values)]
    return rf"^\s*({'|'.join(words)})\s*$"


def text(max_len: int | None = None, doc: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "number"], "description": doc or "Text (a number is read as its text)."}
    if max_len is not None:
        schema["maxLength"] = max_len
        schema["description"] += f" At most {max_len} characters after trimming."
    return schema


def date() -> dict[str, Any]:
    return {"type": "string", "description": DATE_RULE}


def time_of_day() -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": r"^\s*([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?\s*$",
        "description": "`HH:MM`, `H:MM` or `HH:MM:SS`.",
    }


def number(
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | Decimal | None = None,
    places: int | None = None,
) -> dict[str, Any]:
    doc = 'A number, or a string of one (`"850"`, `"3,8"`)'
    schema: dict[str, Any] = {"type": ["number", "string"]}
    if minimum is not None:
        doc += f"; at least {minimum:g}"
    if above is not None:
        doc += f"; above {above:g}"
    if maximum is not None:
        doc += f"; at most {maximum}"
    if places is not None:
        doc += f"; at most {places} decimal places (never rounded)" if places else "; a whole number"
    schema["description"] = doc + "."
    return schema


def boolean() -> dict[str, Any]:
    return {
        "type": ["boolean", "string", "integer"],
        "description": "true/false, or `yes`/`no`, `true`/`false`, `1`/`0` (any case), or 1/0.",
    }


def one_of(values: frozenset[str] | list[str], doc: str = "") -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": _any_case(values),
        "x-allowed": sorted(values),
        "description": (doc + " " if doc else "")
        + f"One of {', '.join(sorted(values))}; case and surrounding space are ignored.",
    }


def ref(domain: Domain) -> dict[str, Any]:
    return {"type": ["string", "integer"], "description": f"The `id` of a record of {domain.value}."}


def timestamp() -> dict[str, Any]:
    return {"description": TIMESTAMP_RULE}


def obj(properties: dict[str, dict[str, Any]], required: list[str] | None = None, doc: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["object", "null", "string"], "properties": properties, "description": doc}
    if required:
        schema["required"] = required
    return schema


def items(properties: dict[str, dict[str, Any]], required: list[str], doc: str = "", *, min_items: int = 0) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": ["array", "null"],
        "items": {"type": "object", "properties": properties, "required": required},
        "description": doc,
    }
    if min_items:
        schema["minItems"] = min_items
    return schema


ID = {"type": ["string", "integer"], "description": "The record's id; a change's `record_id` is this, as text."}
CREATED, UPDATED = {"createdAt": timestamp()}, {"updatedAt": timestamp()}

#: (properties, required) per domain: every key the mapping reads.
RECORDS: dict[Domain, tuple[dict[str, dict[str, Any]], list[str]]] = {
    Domain.STUDENTS: (
        {
            "id": ID,
            "name": text(255),
            "email": text(255, "Unique among the school's users (students and teachers) that are live."),
            "status": one_of(students.STATUSES),
            "joinDate": date(),
            "dateOfBirth": date(),
            "phone": text(20),
            "classId": ref(Domain.CLASSES),
            "avatar": text(),
            "parentContact": text(doc="`Name - phone`, a name, or a phone (the name at most 255, the phone 20 characters)."),
            "parentEmail": text(255),
            "placeOfBirth": text(255),
            "address": text(),
            "hasDiscount": boolean(),
            "discountType": one_of(students.DISCOUNT_TYPES),
            "discountAmount": number(minimum=0, maximum=AMOUNT_MAX, places=2),
            "emergencyContact": obj({"name": text(255), "relationship": text(100), "phone": text(20)}),
            "academicInfo": obj(
                {"level": text(50), "gpa": number(minimum=0, maximum=4, places=2), "enrollmentDate": date()},
                doc="enrollmentDate defaults to joinDate.",
            ),
            **CREATED,
            **UPDATED,
        },
        ["id", "name", "email", "status", "joinDate", "dateOfBirth"],
    ),
    Domain.TEACHERS: (
        {
            "id": ID,
            "name": text(255),
            "email": text(255, "Unique among the school's users (students and teachers) that are live."),
            "subject": text(100),
            "joinDate": date(),
            "phone": text(20),
            "avatar": text(),
            "notes": text(),
            "status": {"type": ["string", "null"], "description": "`inactive` (any case) makes the teacher inactive."},
            **CREATED,
            **UPDATED,
        },
        ["id", "name", "email", "subject", "joinDate"],
    ),
    Domain.CLASSROOMS: (
        {
            "id": ID,
            "name": text(100),
            "location": text(255),
            "capacity": number(above=0, maximum=INT_MAX, places=0),
            "status": {"type": ["string", "null"], "description": "`inactive` (any case) makes the classroom inactive."},
            "createdDate": timestamp(),
            "lastUpdated": timestamp(),
        },
        ["id", "name"],
    ),
    Domain.CLASSES: (
        {
            "id": ID,
            "name": text(255),
            "level": text(50),
            "teacher": obj({"id": ref(Domain.TEACHERS)}, ["id"], "The class's teacher."),
            "roomId": ref(Domain.CLASSROOMS),
            "description": text(),
            "maxStudents": number(above=0, maximum=INT_MAX, places=0),
            "status": one_of(classes.STATUSES, "Default active."),
            "schedule": items(
                {"day": one_of(list(DAYS)), "startTime": time_of_day(), "endTime": time_of_day()},
                ["day", "startTime", "endTime"],
                "Weekly slots; each starts before it ends.",
            ),
            **CREATED,
            **UPDATED,
        },
        ["id", "name", "level", "teacher"],
    ),
    Domain.PAYMENT_OBLIGATIONS: (
        {
            "id": ID,
            "studentId": ref(Domain.STUDENTS),
            "type": text(100),
            "amount": number(above=0, maximum=AMOUNT_MAX, places=2),
            "dueDate": date(),
            "status": one_of(payment_obligations.STATUSES),
            "period": text(50),
            "notes": text(),
            **CREATED,
            **UPDATED,
        },
        ["id", "studentId", "type", "amount", "dueDate", "status"],
    ),
    Domain.PAYMENTS: (
        {
            "id": ID,
            "obligationId": ref(Domain.PAYMENT_OBLIGATIONS),
            "amount": number(above=0, maximum=AMOUNT_MAX, places=2),
            "date": date(),
            "method": one_of(payments.METHODS),
            "notes": text(),
            **CREATED,
            **UPDATED,
        },
        ["id", "obligationId", "amount", "date", "method"],
    ),
    Domain.ATTENDANCE: (
        {
            "id": ID,
            "classId": ref(Domain.CLASSES),
            "sessionDate": date(),
            "studentRecords": items(
                {
                    "studentId": ref(Domain.STUDENTS),
                    "status": one_of(attendance.STATUSES),
                    "homeworkCompleted": boolean(),
                    "notes": text(),
                },
                ["studentId", "status"],
                "One entry per student of the session (a student listed twice is refused).",
            ),
            **CREATED,
            **UPDATED,
        },
        ["id", "classId", "sessionDate"],
    ),
    Domain.ASSESSMENTS: (
        {
            "id": ID,
            "classId": ref(Domain.CLASSES),
            "title": text(255),
            "date": date(),
            "type": text(doc=f"Kept; one of {', '.join(sorted(assessments.TYPES))} (any case) also fills the type column."),
            "totalPoints": number(above=0, maximum=numeric_max(6, 2), places=2),
            "description": text(),
            **CREATED,
            **UPDATED,
        },
        ["id", "classId", "title", "date"],
    ),
    Domain.GRADES: (
        {
            "id": ID,
            "assessmentId": ref(Domain.ASSESSMENTS),
            "studentId": ref(Domain.STUDENTS),
            "value": text(10, "The grade as the app shows it (`85`, `A-`). One per assessment and student that are live."),
            "comments": text(),
            "dateRecorded": date(),
        },
        ["id", "assessmentId", "studentId", "value"],
    ),
    Domain.PRIVATE_LESSONS: (
        {
            "id": ID,
            "studentId": ref(Domain.STUDENTS),
            "teacherId": ref(Domain.TEACHERS),
            "classroomId": ref(Domain.CLASSROOMS),
            "subject": text(100),
            "date": date(),
            "startTime": time_of_day(),
            "endTime": time_of_day(),
            "status": one_of(private_lessons.STATUSES),
            "notes": text(),
            "paymentObligation": obj(
                {
                    "amount": number(above=0, maximum=AMOUNT_MAX, places=2),
                    "dueDate": date(),
                    "status": one_of(payment_obligations.STATUSES),
                    "notes": text(),
                    **CREATED,
                },
                ["amount", "status"],
            ),
            "paymentRecords": items(
                {
                    "amount": number(above=0, maximum=AMOUNT_MAX, places=2),
                    "paymentDate": date(),
                    "method": one_of(payments.METHODS),
                    "notes": text(),
                    **CREATED,
                },
                ["amount", "paymentDate", "method"],
            ),
            **CREATED,
            **UPDATED,
        },
        ["id", "studentId", "teacherId", "classroomId", "subject", "date", "startTime", "endTime", "status"],
    ),
}


def _required(schema: dict[str, Any]) -> dict[str, Any]:
    """A required text is not blank either (``parsing.blank``)."""
    if "string" in schema.get("type", ()) and "pattern" not in schema:
        return {**schema, "pattern": r"\S"}
    return schema


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional key may be null or blank: read as missing."""
    out = dict(schema)
    if isinstance(out.get("type"), list) and "null" not in out["type"]:
        out["type"] = [*out["type"], "null"]
    elif isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "pattern" in out and out["pattern"].startswith(r"^\s*("):
        out["pattern"] = out["pattern"].replace(r"^\s*(", r"^\s*((", 1).replace(r")\s*$", r"))?\s*$")
    return out


def record_schema(domain: Domain) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one source record of ``domain``: a change's ``record``, or
    an entry of the domain's array in a snapshot."""
    properties, required = RECORDS[domain]
    properties = {key: _required(v) if key in required else _optional(v) for key, v in properties.items()}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://schoolmig.example/schemas/records/{domain.value}.json",
        "title": f"A {domain.value} record",
        "description": "What the app holds for one record. A value the rules refuse quarantines the record with the "
        "field and the rule (it is never guessed or truncated); keys not listed are kept and given back on export.",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": True,
    }
