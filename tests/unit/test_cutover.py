"""The cutover's sequencing, resume point and rollback, with fake ports (the real ones
are exercised on the stack in tests/integration/test_coordinator.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from services.coordinator.cutover import (
    MAX_STEP_TRIES,
    STEPS,
    Attempt,
    CutoverFailed,
    LeaseLost,
    remaining_steps,
    run_cutover,
)
from shared.wire.messages import Mode


@dataclass
class FakePorts:
    fail_at: str | None = None
    calls: list[str] = field(default_factory=list)
    modes: list[tuple[Mode, bool]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    outcome: str | None = None
    blips: dict[str, int] = field(default_factory=dict)  # step -> how many times it raises a transient error first
    lease_until: int | None = None  # fence calls that pass before the lease is lost
    fences: int = 0
    pauses: list[int] = field(default_factory=list)

    def _blip(self, step: str) -> None:
        if self.blips.get(step, 0) > 0:
            self.blips[step] -= 1
            raise ConnectionResetError("the database restarted")

    async def fence(self, attempt: Attempt) -> None:
        self.fences += 1
        if self.lease_until is not None and self.fences > self.lease_until:
            raise LeaseLost("another coordinator holds the lease")

    async def pause(self, tries: int) -> None:
        self.pauses.append(tries)

    async def set_attempt_mode(self, attempt: Attempt, mode: Mode, maintenance: bool, reason: str) -> None:
        self.calls.append("set_mode")
        self.modes.append((mode, maintenance))
        if self.fail_at == "switch_mode" and mode is Mode.API and maintenance:
            raise CutoverFailed("the control topic refused the write")

    async def sync_barrier(self, school_id: str) -> str:
        self.calls.append("sync_barrier")
        self._blip("final_sync")
        if self.fail_at == "final_sync":
            raise CutoverFailed("barrier acknowledged on 3 of 549 paths")
        return "barrier ok"

    async def final_validation(self, school_id: str, snapshot_id: str) -> str:
        self.calls.append("final_validation")
        self._blip("final_validation")
        if self.fail_at == "final_validation":
            raise CutoverFailed("2 critical issues")
        return "no critical issue"

    async def health_check(self, school_id: str, snapshot_id: str) -> str:
        self.calls.append("health_check")
        if self.fail_at == "health_check":
            raise CutoverFailed("students holds 40 records, validation saw 41 valid")
        return "healthy"

    async def step_done(self, attempt: Attempt, step: str, evidence: str) -> None:
        self.done.append(step)

    async def finish(self, attempt: Attempt, evidence: str) -> None:
        self.outcome = "completed"

    async def roll_back(self, attempt: Attempt, step: str, why: str) -> None:
        self.outcome = f"rolled back at {step}: {why}"


ATTEMPT = Attempt("a-1", "school-1", "snap-1", None)


async def test_a_clean_cutover_runs_every_step_in_order_and_ends_on_the_api() -> None:
    ports = FakePorts()
    assert await run_cutover(ports, ATTEMPT)
    assert ports.done == list(STEPS) and ports.outcome == "completed"
    assert ports.modes == [(Mode.HYBRID, True), (Mode.API, True), (Mode.API, False)]


async def test_any_failing_step_rolls_back_and_nothing_after_it_runs() -> None:
    for step in ("final_sync", "final_validation", "switch_mode", "health_check"):
        ports = FakePorts(fail_at=step)
        assert not await run_cutover(ports, ATTEMPT)
        assert ports.outcome is not None and ports.outcome.startswith(f"rolled back at {step}")
        assert ports.done == list(STEPS[: STEPS.index(step)])
        assert "maintenance_off" not in ports.done


async def test_a_restarted_coordinator_resumes_after_the_last_completed_step() -> None:
    assert remaining_steps(None) == STEPS
    assert remaining_steps("final_sync") == STEPS[2:]
    assert remaining_steps("maintenance_off") == ()
    ports = FakePorts()
    assert await run_cutover(ports, Attempt("a-1", "school-1", "snap-1", "final_validation"))
    assert ports.done == list(STEPS[3:]) and "sync_barrier" not in ports.calls and "final_validation" not in ports.calls


async def test_an_infrastructure_error_is_retried_and_the_cutover_goes_on() -> None:
    ports = FakePorts(blips={"final_sync": 2, "final_validation": 1})
    assert await run_cutover(ports, ATTEMPT)
    assert ports.outcome == "completed" and ports.calls.count("sync_barrier") == 3 and ports.pauses == [1, 2, 1]


async def test_an_error_that_does_not_go_away_rolls_back_every_cutover_ends() -> None:
    ports = FakePorts(blips={"final_validation": MAX_STEP_TRIES})
    assert not await run_cutover(ports, ATTEMPT)
    assert ports.outcome == f"rolled back at final_validation: ConnectionResetError on {MAX_STEP_TRIES} tries"


@pytest.mark.parametrize("passes", range(len(STEPS) + 1))  # (a fence before each step and before the end)
async def test_a_coordinator_that_lost_the_lease_stops_and_touches_nothing_more(passes: int) -> None:
    """Whenever the lease is lost, nothing after that moment: no step, no rollback, no finish
    (the coordinator holding it now resumes the attempt)."""
    ports = FakePorts(lease_until=passes)
    with pytest.raises(LeaseLost):
        await run_cutover(ports, ATTEMPT)
    assert ports.outcome is None and len(ports.done) == min(passes, len(STEPS))
