"""The gated cutover (the plan's 3.2) as a sequence of steps, and its rollback. Pure
orchestration: every effect goes through :class:`CutoverPorts`, so the sequencing, the
resume point and the rollback are unit-tested with fakes and run for real by the service.

Steps, each idempotent so that a restarted coordinator can repeat the one it was in:
maintenance on (ingest holds the school's writes) → final sync barrier → final
validation → mode ``api`` → health check → maintenance off. A step that fails
(:class:`CutoverFailed`) rolls back: mode back to ``hybrid``, maintenance off, phase
``rolled_back``, with the step and why. Anything else a step raises (the database
restarting, a Kafka timeout) is retried with back-off, ``MAX_STEP_TRIES`` times, then
rolled back too: every cutover ends ``completed`` or ``rolled_back``.

Only the holder of the school's cutover lease runs it (``fence`` before each step and
before the end): a coordinator that lost the lease stops where it is, and the one that
takes the lease over resumes the attempt from its last completed step. The lease alone is
a check, not a token: a holder that loses it in the middle of a long step (the final sync,
the final validation) would still finish that step. So each runner also claims the
attempt's next *epoch* when it takes it up (``Attempt.epoch``), and every write the
attempt makes (a step done, a mode, the end) is refused with :class:`LeaseLost` once a
newer epoch was claimed: a stale runner's late writes never land after the new one's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shared.wire.messages import Mode

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


class LeaseLost(Exception):
    """This coordinator no longer holds the school's cutover lease: another one goes on."""


MAX_STEP_TRIES = 5
ROLLING_BACK = "rolling_back"
"""The step an attempt records while it is rolled back: resumed, it finishes the rollback."""


@dataclass(frozen=True)
class Attempt:
    attempt_id: str
    school_id: str
    snapshot_id: str
    last_step: str | None  # the last step completed (None: not started)
    epoch: int = 0
    """The fencing token this runner claimed (0: not claimed yet, so no write is allowed)."""


class CutoverPorts(Protocol):
    async def set_attempt_mode(self, attempt: Attempt, mode: Mode, maintenance: bool, reason: str) -> None: ...
    async def sync_barrier(self, school_id: str) -> str: ...
    async def final_validation(self, school_id: str, snapshot_id: str) -> str: ...
    async def health_check(self, school_id: str, snapshot_id: str) -> str: ...
    async def step_done(self, attempt: Attempt, step: str, evidence: str) -> None: ...
    async def finish(self, attempt: Attempt, evidence: str) -> None: ...
    async def roll_back(self, attempt: Attempt, step: str, why: str) -> None: ...
    async def fence(self, attempt: Attempt) -> None:
        """Raise :class:`LeaseLost` unless this process still holds the school's cutover lease."""
        ...

    async def pause(self, tries: int) -> None:
        """Wait before trying a step again (back-off)."""
        ...


def remaining_steps(last_step: str | None) -> tuple[str, ...]:
    """The steps still to run after ``last_step`` (all of them for a new attempt)."""
    return STEPS if last_step is None else STEPS[STEPS.index(last_step) + 1 :]


async def run_cutover(ports: CutoverPorts, attempt: Attempt) -> bool:
    """Run (or resume) a cutover; True when the school is on the API, False when rolled back.
    Raises :class:`LeaseLost` (and does nothing more) when another coordinator took over."""
    for step in remaining_steps(attempt.last_step):
        for tries in range(1, MAX_STEP_TRIES + 1):
            await ports.fence(attempt)
            try:
                evidence = await _run_step(ports, attempt, step)
                break
            except CutoverFailed as failure:
                await ports.fence(attempt)
                await ports.roll_back(attempt, step, str(failure))
                return False
            except LeaseLost:
                raise
            except Exception as exc:  # the infrastructure's, not the school's: again, after a pause
                if tries == MAX_STEP_TRIES:
                    await ports.fence(attempt)
                    await ports.roll_back(attempt, step, f"{type(exc).__name__} on {MAX_STEP_TRIES} tries")
                    return False
                await ports.pause(tries)
        await ports.step_done(attempt, step, evidence)
    await ports.fence(attempt)
    await ports.finish(attempt, "every cutover step passed")
    return True


async def _run_step(ports: CutoverPorts, attempt: Attempt, step: str) -> str:
    school = attempt.school_id
    if step == "maintenance_on":
        await ports.set_attempt_mode(attempt, Mode.HYBRID, True, "cutover: writes held")
        return "maintenance on: ingest holds the school's writes"
    if step == "final_sync":
        return await ports.sync_barrier(school)
    if step == "final_validation":
        return await ports.final_validation(school, attempt.snapshot_id)
    if step == "switch_mode":
        await ports.set_attempt_mode(attempt, Mode.API, True, "cutover: reads and writes go to the API")
        return "mode api"
    if step == "health_check":
        return await ports.health_check(school, attempt.snapshot_id)
    await ports.set_attempt_mode(attempt, Mode.API, False, "cutover completed")  # maintenance_off
    return "maintenance off"
