"""The target tables the pipeline writes: columns, their types, and load order.

One catalogue shared by the transform (which builds rows), the loader (which stages,
converts and upserts them) and the validator (which reads them back). The DDL in
``shared/migrations`` is the source of truth for constraints; this lists what the
pipeline writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.catalog.domains import Domain

#: Columns every migrated table carries, beyond its own.
PROVENANCE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "uuid"),
    ("school_id", "text"),
    ("legacy_id", "text"),
    ("extras", "jsonb"),
    ("source_snapshot_id", "text"),
    ("source_ts", "timestamptz"),
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    own_columns: tuple[tuple[str, str], ...]
    references: tuple[tuple[str, str], ...] = ()
    """(column, referenced table) for foreign keys to *other* records: a row whose parent
    is missing is parked until it arrives (rows of the same record are written together)."""

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return PROVENANCE_COLUMNS + self.own_columns

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


TIMESTAMPS: tuple[tuple[str, str], ...] = (("created_at", "timestamptz"), ("updated_at", "timestamptz"))
"""Every table's: the record's own ``createdAt``/``updatedAt`` where it has them, else the
snapshot's time (so a row's timestamps never depend on when it happened to be loaded)."""

USERS = TableSpec(
    "users",
    (
        ("email", "text"),
        ("name", "text"),
        ("avatar_url", "text"),
        ("role", "text"),
        ("is_active", "bool"),
        *TIMESTAMPS,
    ),
)

STUDENTS = TableSpec(
    "students",
    (
        ("user_id", "uuid"),
        ("phone", "text"),
        ("class_id", "uuid"),
        ("status", "text"),
        ("join_date", "date"),
        ("date_of_birth", "date"),
        ("place_of_birth", "text"),
        ("address", "text"),
        ("parent_name", "text"),
        ("parent_email", "text"),
        ("parent_phone", "text"),
        ("emergency_contact_name", "text"),
        ("emergency_contact_relationship", "text"),
        ("emergency_contact_phone", "text"),
        ("academic_level", "text"),
        ("gpa", "numeric"),
        ("enrollment_date", "date"),
        ("has_discount", "bool"),
        ("discount_type", "text"),
        ("discount_amount", "numeric"),
        *TIMESTAMPS,
    ),
    references=(("class_id", "classes"),),
)


TEACHERS = TableSpec(
    "teachers",
    (
        ("user_id", "uuid"),
        ("phone", "text"),
        ("subject", "text"),
        ("join_date", "date"),
        ("notes", "text"),
        ("is_active", "bool"),
        *TIMESTAMPS,
    ),
)
CLASSROOMS = TableSpec(
    "classrooms",
    (("name", "text"), ("location", "text"), ("capacity", "int"), ("is_active", "bool"), *TIMESTAMPS),
)
CLASSES = TableSpec(
    "classes",
    (
        ("name", "text"),
        ("description", "text"),
        ("level", "text"),
        ("teacher_id", "uuid"),
        ("classroom_id", "uuid"),
        ("max_students", "int"),
        ("status", "text"),
        *TIMESTAMPS,
    ),
    references=(("teacher_id", "teachers"), ("classroom_id", "classrooms")),
)
CLASS_SCHEDULES = TableSpec(
    "class_schedules",
    (
        ("class_id", "uuid"),
        ("day_of_week", "int"),
        ("start_time", "time"),
        ("end_time", "time"),
        ("is_active", "bool"),
        *TIMESTAMPS,
    ),
)
PAYMENT_OBLIGATIONS = TableSpec(
    "payment_obligations",
    (
        ("student_id", "uuid"),
        ("type", "text"),
        ("amount", "numeric"),
        ("due_date", "date"),
        ("period", "text"),
        ("status", "text"),
        ("notes", "text"),
        *TIMESTAMPS,
    ),
    references=(("student_id", "students"),),
)
PAYMENTS = TableSpec(
    "payments",
    (
        ("obligation_id", "uuid"),
        ("amount", "numeric"),
        ("payment_date", "date"),
        ("method", "text"),
        ("notes", "text"),
        *TIMESTAMPS,
    ),
    references=(("obligation_id", "payment_obligations"),),
)
ATTENDANCE_RECORDS = TableSpec(
    "attendance_records",
    (
        ("student_id", "uuid"),
        ("class_id", "uuid"),
        ("date", "date"),
        ("status", "text"),
        ("homework_completed", "bool"),
        ("notes", "text"),
        *TIMESTAMPS,
    ),
    references=(("student_id", "students"), ("class_id", "classes")),
)
ASSESSMENTS = TableSpec(
    "assessments",
    (
        ("class_id", "uuid"),
        ("title", "text"),
        ("type", "text"),
        ("total_points", "numeric"),
        ("date", "date"),
        ("description", "text"),
        *TIMESTAMPS,
    ),
    references=(("class_id", "classes"),),
)
GRADES = TableSpec(
    "grades",
    (
        ("assessment_id", "uuid"),
        ("student_id", "uuid"),
        ("value", "text"),
        ("comments", "text"),
        ("date_recorded", "date"),
        *TIMESTAMPS,
    ),
    references=(("assessment_id", "assessments"), ("student_id", "students")),
)
PRIVATE_LESSONS = TableSpec(
    "private_lessons",
    (
        ("student_id", "uuid"),
        ("teacher_id", "uuid"),
        ("classroom_id", "uuid"),
        ("subject", "text"),
        ("lesson_date", "date"),
        ("start_time", "time"),
        ("end_time", "time"),
        ("status", "text"),
        ("notes", "text"),
        *TIMESTAMPS,
    ),
    references=(("student_id", "students"), ("teacher_id", "teachers"), ("classroom_id", "classrooms")),
)
PRIVATE_LESSON_PAYMENT_OBLIGATIONS = TableSpec(
    "private_lesson_payment_obligations",
    (("lesson_id", "uuid"), ("amount", "numeric"), ("due_date", "date"), ("status", "text"), ("notes", "text"), *TIMESTAMPS),
)
PRIVATE_LESSON_PAYMENTS = TableSpec(
    "private_lesson_payments",
    (("lesson_id", "uuid"), ("amount", "numeric"), ("payment_date", "date"), ("method", "text"), ("notes", "text"), *TIMESTAMPS),
)

#: Parents before children: a batch is written in this order inside one transaction.
LOAD_ORDER: tuple[TableSpec, ...] = (
    USERS,
    CLASSROOMS,
    TEACHERS,
    CLASSES,
    CLASS_SCHEDULES,
    STUDENTS,
    PAYMENT_OBLIGATIONS,
    PAYMENTS,
    ATTENDANCE_RECORDS,
    ASSESSMENTS,
    GRADES,
    PRIVATE_LESSONS,
    PRIVATE_LESSON_PAYMENT_OBLIGATIONS,
    PRIVATE_LESSON_PAYMENTS,
)
TABLES: dict[str, TableSpec] = {t.name: t for t in LOAD_ORDER}

#: The table that holds the rows of each source record, found by ``legacy_id``.
PRIMARY_TABLE: dict[Domain, str] = {
    Domain.STUDENTS: "students",
    Domain.TEACHERS: "teachers",
    Domain.CLASSROOMS: "classrooms",
    Domain.CLASSES: "classes",
    Domain.PAYMENT_OBLIGATIONS: "payment_obligations",
    Domain.PAYMENTS: "payments",
    Domain.ATTENDANCE: "attendance_records",
    Domain.ASSESSMENTS: "assessments",
    Domain.GRADES: "grades",
    Domain.PRIVATE_LESSONS: "private_lessons",
}

#: Domains, parents first (by their primary table's place in ``LOAD_ORDER``). Ingest fans
#: a snapshot out in this order, so that on the way parents mostly come before their
#: children and the loader rarely has to park a child (measured: 76 % of records were
#: parked on the way when the file's own order sent students before their classes).
DOMAIN_LOAD_ORDER: tuple[Domain, ...] = tuple(
    sorted(PRIMARY_TABLE, key=lambda d: [spec.name for spec in LOAD_ORDER].index(PRIMARY_TABLE[d]))
)


REFERENCED_TABLES: tuple[str, ...] = tuple(sorted({target for spec in TABLES.values() for _, target in spec.references}))
"""Every table some other record's row points at."""


def ref_exists_sql(ref_table: str, ref_id: str) -> str:
    """SQL true when the row ``ref_table``/``ref_id`` (column expressions) exists in its
    table. Table names come from the fixed catalogue, never from input."""
    cases = " ".join(f"WHEN '{t}' THEN EXISTS (SELECT 1 FROM {t} WHERE id = {ref_id})" for t in REFERENCED_TABLES)
    return f"(CASE {ref_table} {cases} ELSE false END)"


#: The tables each domain's records write, and the filter that tells a domain's rows apart
#: in a table two domains share (``users``: students and teachers).
DOMAIN_TABLES: dict[Domain, tuple[tuple[str, str | None], ...]] = {
    Domain.STUDENTS: (("users", "student"), ("students", None)),
    Domain.TEACHERS: (("users", "teacher"), ("teachers", None)),
    Domain.CLASSROOMS: (("classrooms", None),),
    Domain.CLASSES: (("classes", None), ("class_schedules", None)),
    Domain.PAYMENT_OBLIGATIONS: (("payment_obligations", None),),
    Domain.PAYMENTS: (("payments", None),),
    Domain.ATTENDANCE: (("attendance_records", None),),
    Domain.ASSESSMENTS: (("assessments", None),),
    Domain.GRADES: (("grades", None),),
    Domain.PRIVATE_LESSONS: (
        ("private_lessons", None),
        ("private_lesson_payment_obligations", None),
        ("private_lesson_payments", None),
    ),
}


#: Every unique key of the target schema beside ``id``, per table. Each holds over the live
#: rows only (``deleted_at IS NULL``: migration 015), and a write that would take a value a
#: live row of another record holds waits for it (``shared.ledger.uniques``).
UNIQUE_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "users": (("school_id", "email"),),
    "students": (("user_id",),),
    "teachers": (("user_id",),),
    "attendance_records": (("student_id", "class_id", "date"),),
    "grades": (("assessment_id", "student_id"),),
    "private_lesson_payment_obligations": (("lesson_id",),),
}


def domain_of_row(table: str, role: str | None = None) -> Domain:
    """The domain whose records write a row of ``table`` (``users``: by the row's ``role``)."""
    for domain, tables in DOMAIN_TABLES.items():
        for name, only in tables:
            if name == table and (only is None or only == role):
                return domain
    raise KeyError(f"no domain writes {table} rows with role {role!r}")


#: Tables where a record has as many rows as it has nested children (a session's entries, a
#: class's slots, a lesson's obligation and payments): a newer write of the record that no
#: longer has one of them leaves that row not live (``deleted_at``), as a deleted record's.
CHILD_TABLES: dict[Domain, tuple[str, ...]] = {
    Domain.CLASSES: ("class_schedules",),
    Domain.ATTENDANCE: ("attendance_records",),
    Domain.PRIVATE_LESSONS: ("private_lesson_payment_obligations", "private_lesson_payments"),
}
