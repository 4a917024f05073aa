"""The gated cutover (the plan's 3.2) as a sequence of steps, and its rollback. Pure
orchestration: every effect goes through :class:`CutoverPorts`, so the sequencing, the
resume point and the rollback are unit-tested with fakes and run for real by the service.

Steps, each idempotent so that a restarted coordinator can repeat the one it was in:
maintenance on (ingest holds the school's writes) → final sync barrier → final
validation → mode ``api`` → health check → maintenance off. Any failure rolls back:
mode back to ``hybrid``, maintenance off, phase ``rolled_back``, with the step and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.messages import Mode

STEPS: tuple[str, ...] = (
    "maintenance_on",
    "final_sync",
    "final_validation",
    "switch_mode",
    "health_check",
    "maintenance_off",
)


class CutoverFailed(Exception):
    """A step could not be completed; the message says why (ids only, no personal data)."""


@dataclass(frozen=True)
class Attempt:
    attempt_id: str
    school_id: str
    snapshot_id: str
    last_step: str | None  # the last step completed (None: not started)


class CutoverPorts(Protocol):
    async def set_mode(self, school_id: str, mode: Mode, maintenance: bool, reason: str) -> None: ...
    async def sync_barrier(self, school_id: str) -> str: ...
    async def final_validation(self, school_id: str, snapshot_id: str) -> str: ...
    async def health_check(self, school_id: str, snapshot_id: str) -> str: ...
    async def step_done(self, attempt: Attempt, step: str, evidence: str) -> None: ...
    async def finish(self, attempt: Attempt, evidence: str) -> None: ...
    async def roll_back(self, attempt: Attempt, step: str, why: str) -> None: ...


def remaining_steps(last_step: str | None) -> tuple[str, ...]:
    """The steps still to run after ``last_step`` (all of them for a new attempt)."""
    return STEPS if last_step is None else STEPS[STEPS.index(last_step) + 1 :]


async def run_cutover(ports: CutoverPorts, attempt: Attempt) -> bool:
    """Run (or resume) a cutover; True when the school is on the API, False when rolled back."""
    school = attempt.school_id
    for step in remaining_steps(attempt.last_step):
        try:
            if step == "maintenance_on":
                await ports.set_mode(school, Mode.HYBRID, True, "cutover: writes held")
                evidence = "maintenance on: ingest holds the school's writes"
            elif step == "final_sync":
                evidence = await ports.sync_barrier(school)
            elif step == "final_validation":
                evidence = await ports.final_validation(school, attempt.snapshot_id)
            elif step == "switch_mode":
                await ports.set_mode(school, Mode.API, True, "cutover: reads and writes go to the API")
                evidence = "mode api"
            elif step == "health_check":
                evidence = await ports.health_check(school, attempt.snapshot_id)
            else:  # maintenance_off
                await ports.set_mode(school, Mode.API, False, "cutover completed")
                evidence = "maintenance off"
        except CutoverFailed as failure:
            await ports.roll_back(attempt, step, str(failure))
            return False
        await ports.step_done(attempt, step, evidence)
    await ports.finish(attempt, "every cutover step passed")
    return True
