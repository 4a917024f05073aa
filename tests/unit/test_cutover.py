"""The cutover's sequencing, resume point and rollback, with fake ports (the real ones
are exercised on the stack in tests/integration/test_coordinator.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from services.coordinator.cutover import (
    STEPS,
    Attempt,
    CutoverFailed,
    remaining_steps,
    run_cutover,
)
from shared.messages import Mode


@dataclass
class FakePorts:
    fail_at: str | None = None
    calls: list[str] = field(default_factory=list)
    modes: list[tuple[Mode, bool]] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    outcome: str | None = None

    async def set_mode(self, school_id: str, mode: Mode, maintenance: bool, reason: str) -> None:
        self.calls.append("set_mode")
        self.modes.append((mode, maintenance))
        if self.fail_at == "switch_mode" and mode is Mode.API and maintenance:
            raise CutoverFailed("the control topic refused the write")

    async def sync_barrier(self, school_id: str) -> str:
        self.calls.append("sync_barrier")
        if self.fail_at == "final_sync":
            raise CutoverFailed("barrier acknowledged on 3 of 549 paths")
        return "barrier ok"

    async def final_validation(self, school_id: str, snapshot_id: str) -> str:
        self.calls.append("final_validation")
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
