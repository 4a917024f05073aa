"""The migration report: the JSON contract every later issue keeps. Pure.

Per school: ``phase``, and per domain (all ten) ``source``, ``loaded``, ``quarantined``
with ``source == loaded + quarantined``, plus a ``quarantine`` list of
``{domain, legacy_id, reason}``, and the validation result when there is one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.catalog.domains import ALL_DOMAINS, Domain
from shared.ledger.accounting import DomainCounts

REPORT_VERSION = 1


def school_report(
    *,
    school_id: str,
    snapshot_id: str,
    phase: str,
    counts: dict[Domain, DomainCounts],
    quarantine: list[dict[str, Any]],
    validation: dict[str, Any] | None,
    blocked: str | None = None,
) -> dict[str, Any]:
    domains = {
        d.value: {
            "source": counts.get(d, DomainCounts()).source,
            "loaded": counts.get(d, DomainCounts()).loaded,
            "quarantined": counts.get(d, DomainCounts()).quarantined,
        }
        for d in ALL_DOMAINS
    }
    accounted = all(c.accounted for c in counts.values()) if counts else False
    return {
        "school_id": school_id,
        "snapshot_id": snapshot_id,
        "phase": phase,
        "accounted": accounted,
        "validation_ok": bool(validation and validation.get("ok")),
        "domains": domains,
        "quarantine": [{"domain": q["domain"], "legacy_id": q["legacy_id"], "reason": q["reason"]} for q in quarantine],
        "validation": validation,
        **({"blocked": blocked} if blocked else {}),
    }


def run_report(schools: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "report_version": REPORT_VERSION,
        "generated_at": datetime.now(UTC).isoformat(),
        "ok": bool(schools) and all(s["accounted"] and s["validation_ok"] for s in schools),
        "schools": schools,
    }
