"""Validation issue types and their severity: one table, read by the validator (to
grade), the coordinator (to gate) and the README (to document)."""

from __future__ import annotations

from shared.messages import Severity

SEVERITY: dict[str, Severity] = {
    "count_mismatch": Severity.CRITICAL,
    "missing_record": Severity.CRITICAL,
    "quarantined": Severity.WARNING,
}
