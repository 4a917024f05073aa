"""The target tables the pipeline writes: columns, their types, and load order.

One catalogue shared by the transform (which builds rows), the loader (which stages,
converts and upserts them) and the validator (which reads them back). The DDL in
``shared/migrations`` is the source of truth for constraints; this lists what the
pipeline writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.domains import Domain

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

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        return PROVENANCE_COLUMNS + self.own_columns

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


USERS = TableSpec(
    "users",
    (
        ("email", "text"),
        ("name", "text"),
        ("avatar_url", "text"),
        ("role", "text"),
        ("is_active", "bool"),
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
    ),
)

#: Parents before children: a batch is written in this order inside one transaction.
LOAD_ORDER: tuple[TableSpec, ...] = (USERS, STUDENTS)
TABLES: dict[str, TableSpec] = {t.name: t for t in LOAD_ORDER}

#: The table that holds one row per source record of a domain (for counting and checks).
PRIMARY_TABLE: dict[Domain, str] = {
    Domain.STUDENTS: "students",
}
