from datetime import UTC, datetime

import pytest

from services.coordinator.phases import (
    TRANSITIONS,
    IllegalTransition,
    Phase,
    check_transition,
    steps_for_snapshot,
)
from shared.catalog.domains import Domain
from shared.wire.messages import AuditSummary, SnapshotFormat, SnapshotReleased


def released(verified: bool = True) -> SnapshotReleased:
    return SnapshotReleased(
        school_id="school-a",
        snapshot_id="snap-1",
        format=SnapshotFormat.LOCALSTORAGE_DUMP,
        taken_at=datetime(2024, 5, 1, tzinfo=UTC),
        sha256="a" * 64,
        backup_verified=verified,
        audit=AuditSummary(source_counts={Domain.STUDENTS: 3}, unknown_keys=["theme"], duplicate_ids={}, corrupted={}),
    )


def test_the_happy_path_is_a_chain() -> None:
    chain = [None, *Phase.__members__.values()][:-1]  # all but rolled_back, in order
    for current, target in zip(chain, chain[1:], strict=False):
        check_transition(current, target)


def test_rollback_is_reachable_from_every_step_after_dual_write_began() -> None:
    # (from completed only with a verified export: Operations.rollback checks, the integration test proves)
    for phase in (Phase.DUAL_WRITE, Phase.SYNCED, Phase.VALIDATED, Phase.CUTOVER, Phase.COMPLETED):
        check_transition(phase, Phase.ROLLED_BACK)
    for phase in (None, Phase.REGISTERED, Phase.AUDITED, Phase.BACKED_UP):
        with pytest.raises(IllegalTransition):
            check_transition(phase, Phase.ROLLED_BACK)


def test_no_skipping_phases() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(Phase.REGISTERED, Phase.DUAL_WRITE)
    with pytest.raises(IllegalTransition):
        check_transition(Phase.DUAL_WRITE, Phase.VALIDATED)
    assert TRANSITIONS[Phase.COMPLETED] == frozenset({Phase.ROLLED_BACK})


def test_first_snapshot_walks_to_dual_write_with_evidence() -> None:
    steps = steps_for_snapshot(None, released())
    assert [p for p, _ in steps] == [Phase.REGISTERED, Phase.AUDITED, Phase.BACKED_UP, Phase.DUAL_WRITE]
    assert "3 records" in steps[1][1] and "1 unknown keys" in steps[1][1]


def test_unverified_backup_stops_at_audited_and_a_later_verified_one_resumes() -> None:
    assert [p for p, _ in steps_for_snapshot(None, released(verified=False))] == [Phase.REGISTERED, Phase.AUDITED]
    assert [p for p, _ in steps_for_snapshot(Phase.AUDITED, released())] == [Phase.BACKED_UP, Phase.DUAL_WRITE]


def test_a_new_snapshot_resyncs_a_synced_or_validated_school_but_not_after_cutover() -> None:
    assert [p for p, _ in steps_for_snapshot(Phase.VALIDATED, released())] == [Phase.DUAL_WRITE]
    assert [p for p, _ in steps_for_snapshot(Phase.SYNCED, released())] == [Phase.DUAL_WRITE]
    assert steps_for_snapshot(Phase.DUAL_WRITE, released()) == []
    assert steps_for_snapshot(Phase.COMPLETED, released()) == []


def test_critical_audit_findings_stop_a_school_before_audited_unless_overridden() -> None:
    event = released()
    critical = event.model_copy(update={"audit": event.audit.model_copy(update={"critical_findings": 2})})
    assert [p for p, _ in steps_for_snapshot(None, critical)] == [Phase.REGISTERED]
    assert steps_for_snapshot(Phase.REGISTERED, critical) == []
    steps = steps_for_snapshot(Phase.REGISTERED, critical, override="values lost in the browser too (ana)")
    assert [p for p, _ in steps] == [Phase.AUDITED, Phase.BACKED_UP, Phase.DUAL_WRITE]
    assert "2 critical finding(s), overridden: values lost in the browser too (ana)" in steps[0][1]
