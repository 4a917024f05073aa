"""The per-school phase state machine. Pure: which moves are legal, and what a new
snapshot means for a school in each phase.

``registered → audited → backed_up → dual_write → synced → validated → cutover → completed``,
with ``rolled_back`` reachable from every step after ``dual_write`` began (from ``completed``
only with a verified export of the school's data, see ``Operations.rollback``), and a new
snapshot taking a synced or validated school back to ``dual_write`` (a re-sync).
"""

from __future__ import annotations

from enum import StrEnum

from shared.wire.messages import SnapshotReleased


class Phase(StrEnum):
    REGISTERED = "registered"
    AUDITED = "audited"
    BACKED_UP = "backed_up"
    DUAL_WRITE = "dual_write"
    SYNCED = "synced"
    VALIDATED = "validated"
    CUTOVER = "cutover"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"


_ROLLBACK_FROM = {Phase.DUAL_WRITE, Phase.SYNCED, Phase.VALIDATED, Phase.CUTOVER}

TRANSITIONS: dict[Phase | None, frozenset[Phase]] = {
    None: frozenset({Phase.REGISTERED}),
    Phase.REGISTERED: frozenset({Phase.AUDITED}),
    Phase.AUDITED: frozenset({Phase.BACKED_UP}),
    Phase.BACKED_UP: frozenset({Phase.DUAL_WRITE}),
    Phase.DUAL_WRITE: frozenset({Phase.SYNCED, Phase.ROLLED_BACK}),
    Phase.SYNCED: frozenset({Phase.VALIDATED, Phase.DUAL_WRITE, Phase.ROLLED_BACK}),
    Phase.VALIDATED: frozenset({Phase.CUTOVER, Phase.DUAL_WRITE, Phase.ROLLED_BACK}),
    Phase.CUTOVER: frozenset({Phase.COMPLETED, Phase.ROLLED_BACK}),
    Phase.COMPLETED: frozenset({Phase.ROLLED_BACK}),  # only with a verified export (Operations.rollback)
    Phase.ROLLED_BACK: frozenset({Phase.DUAL_WRITE}),
}
assert all(Phase.ROLLED_BACK in TRANSITIONS[p] for p in _ROLLBACK_FROM)


class IllegalTransition(ValueError):
    pass


def check_transition(current: Phase | None, target: Phase) -> None:
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(f"cannot go from {current.value if current else 'nothing'} to {target.value}")


def audit_blocks(event: SnapshotReleased, override: str | None) -> bool:
    """Critical audit findings stop a school before ``audited``, unless an operator overrode
    them with a written reason."""
    return event.audit.critical_findings > 0 and not override


def steps_for_snapshot(current: Phase | None, event: SnapshotReleased, override: str | None = None) -> list[tuple[Phase, str]]:
    """The moves, each with its evidence, that a released snapshot makes from ``current``.

    Stops short where the evidence is missing: critical audit findings (without an
    operator's override) leave the school ``registered``, an unverified backup leaves it
    ``audited``. A school already in ``dual_write`` stays there, now syncing the new snapshot.
    """
    audit = event.audit
    total = sum(audit.source_counts.values())
    findings = (
        f"{total} records; {sum(len(v) for v in audit.duplicate_ids.values())} duplicate ids; "
        f"{sum(audit.corrupted.values())} corrupted entries; {len(audit.unknown_keys)} unknown keys"
    )
    if audit.critical_findings:
        findings += f"; {audit.critical_findings} critical finding(s)" + (f", overridden: {override}" if override else "")
    onboarding = [
        (Phase.REGISTERED, f"snapshot {event.snapshot_id} received"),
        (Phase.AUDITED, f"audit: {findings}"),
        (Phase.BACKED_UP, f"backup of snapshot {event.snapshot_id} verified, sha256 {event.sha256[:12]}"),
        (Phase.DUAL_WRITE, "records fanned out; sync in progress"),
    ]
    order = [phase for phase, _ in onboarding]
    if current is None or current in order[:-1]:
        start = 0 if current is None else order.index(current) + 1
        steps = onboarding[start:]
        if audit_blocks(event, override):
            steps = [s for s in steps if order.index(s[0]) < order.index(Phase.AUDITED)]
        if not event.backup_verified:
            steps = [s for s in steps if order.index(s[0]) < order.index(Phase.BACKED_UP)]
        return steps
    if current in (Phase.SYNCED, Phase.VALIDATED, Phase.ROLLED_BACK):
        return [(Phase.DUAL_WRITE, f"new snapshot {event.snapshot_id}: re-sync ({findings})")]
    return []
