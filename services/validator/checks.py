"""The validation rules, over facts already read from the database. Pure.

Per domain: every source record is loaded or quarantined (``count_mismatch`` if not), and
every record the ledger calls loaded has its row (``missing_record`` if not).
Quarantined records are reported (``quarantined``, a warning): accounted for, not migrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.domains import ALL_DOMAINS, Domain
from shared.messages import DomainValidation, Severity, ValidationIssue
from shared.severity import SEVERITY


@dataclass(frozen=True)
class DomainFacts:
    source: int
    loaded: int
    quarantined: int
    missing_rows: list[str] = field(default_factory=list)


def _issue(kind: str, domain: Domain, message: str, record_id: str | None = None) -> ValidationIssue:
    return ValidationIssue(type=kind, severity=SEVERITY[kind], domain=domain, record_id=record_id, message=message)


def validate_domain(domain: Domain, facts: DomainFacts) -> DomainValidation:
    issues: list[ValidationIssue] = []
    accounted = facts.loaded + facts.quarantined
    if accounted != facts.source:
        issues.append(
            _issue(
                "count_mismatch", domain,
                f"source {facts.source}, loaded {facts.loaded} + quarantined {facts.quarantined} = {accounted}",
            )  # fmt: skip
        )
    for legacy_id in facts.missing_rows:
        issues.append(_issue("missing_record", domain, "ledger says loaded, row not found", legacy_id))
    if facts.quarantined:
        issues.append(_issue("quarantined", domain, f"{facts.quarantined} record(s) in quarantine"))
    return DomainValidation(
        domain=domain,
        total_records=facts.source,
        valid_records=max(facts.loaded - len(facts.missing_rows), 0),
        issues=issues,
    )


def validate(facts: dict[Domain, DomainFacts]) -> tuple[bool, list[DomainValidation]]:
    """(ok, per-domain results); ok means no critical issue in any domain."""
    results = [validate_domain(d, facts.get(d, DomainFacts(0, 0, 0))) for d in ALL_DOMAINS]
    ok = not any(i.severity is Severity.CRITICAL for r in results for i in r.issues)
    return ok, results
