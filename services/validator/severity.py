"""Validation issue types and their severity: one table, read by the validator's checks
to grade each issue (the coordinator then gates on the result's ``ok``: a critical issue
blocks ``validated`` and cutover)."""

from __future__ import annotations

from shared.wire.messages import Severity

#: type -> (severity, what it means)
ISSUE_TYPES: dict[str, tuple[Severity, str]] = {
    "count_mismatch": (Severity.CRITICAL, "source records != loaded + quarantined: something is unaccounted for"),
    "missing_record": (Severity.CRITICAL, "a source record that should be in the tables is not"),
    "data_mismatch": (Severity.CRITICAL, "a record's rows differ from what its source maps to (fields listed)"),
    "status_mismatch": (Severity.CRITICAL, "an obligation's status differs from the school's migrated status"),
    "unexpected_record": (Severity.CRITICAL, "the tables hold a record this snapshot does not have"),
    "orphaned_reference": (Severity.CRITICAL, "a row's foreign key does not resolve"),
    "orphan_with_parent": (
        Severity.CRITICAL,
        "quarantined as an orphan, yet every parent it waited for is in the tables (to re-drive)",
    ),
    "unique_violation": (Severity.CRITICAL, "two rows share the value of a unique key"),
    "data_conflict": (
        Severity.CRITICAL,
        "a write in quarantine for a conflict of the data (a unique value another record still holds, a change's "
        "parent that never came): to replay after a fix (schoolmig replay) or accept (schoolmig accept-conflict)",
    ),
    "accepted_conflict": (Severity.WARNING, "a data conflict an operator accepted, with who and why"),
    "backup_unverified": (Severity.CRITICAL, "the backup compared against no longer matches its SHA-256"),
    "quarantined": (Severity.WARNING, "records accounted for in quarantine, not migrated (per reason)"),
    "duplicate_id": (Severity.WARNING, "the source repeats an id: the first record is migrated, the rest quarantined"),
    "name_mismatch": (Severity.INFO, "a denormalised name (studentName, className, teacher.name) differs from its referent"),
}

SEVERITY: dict[str, Severity] = {kind: severity for kind, (severity, _) in ISSUE_TYPES.items()}
