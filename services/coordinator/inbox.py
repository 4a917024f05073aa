"""What comes in to the coordinator: operator commands and lifecycle events.

A command is acted on only when an operator the coordinator knows signed it, it was not
acted on before, and it is fresh; an event only when a service signed it. Anything else is
in the dead letter with its reason, never acted on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from faststream.kafka import KafkaMessage
from pydantic import TypeAdapter, ValidationError

from services.coordinator.operations import Operations
from services.coordinator.phases import Phase
from services.coordinator.store import CoordinatorStore
from services.coordinator.sync import ACTOR
from shared.failures.policy import Unusable
from shared.platform.signing import OPERATOR_PREFIX, SERVICE, stale_age
from shared.service import Wiring
from shared.wire.batching import signed_by
from shared.wire.messages import (
    CHANGE_ID_PREFIX,
    OPERATOR_RUN_PREFIX,
    Event,
    OperatorCommand,
    SchoolRejected,
    SnapshotIncomplete,
    SnapshotReleased,
    SnapshotWithheld,
    ValidationCompleted,
    error_summary,
)

log = logging.getLogger("schoolmig.coordinator")
COMMAND_CLOCK_SKEW_S = 60.0  # a command "from the future" by more than this is refused too
OPERATOR_COMMAND: TypeAdapter[OperatorCommand] = TypeAdapter(OperatorCommand)
EVENT: TypeAdapter[Event] = TypeAdapter(Event)


@dataclass(kw_only=True)
class Inbox(Wiring):
    """The coordinator's two handlers' policy."""

    store: CoordinatorStore
    operations: Operations

    async def on_command(self, body: bytes, message: KafkaMessage) -> None:
        """Acted on only when an operator the coordinator knows signed it (``shared.platform.signing``);
        the actor recorded is that operator, whatever the body says."""
        command = await self.accepted(message, body, OPERATOR_COMMAND, allowed=(OPERATOR_PREFIX,))
        if command is None:
            return
        assert isinstance(command, OperatorCommand) and isinstance(command.actor, str)
        if (why := self.replay_refusal(command, await self.store.command_seen(command.command_id))) is not None:
            await self.letters.reject(message.raw_message, body, Unusable(*why, refused=True))
            return
        outcome = await self.operations.handle(command)
        await self.store.command_done(
            command, outcome
        )  # after acting: a crash in between acts again (idempotent), never loses it
        log.info("%s: %s by %s: %s", command.school_id, command.action, command.actor, outcome)

    def replay_refusal(self, command: OperatorCommand, seen: bool) -> tuple[str, str] | None:
        """Why a correctly signed command is still not acted on: a replay of one acted on before,
        or one signed too long ago (a captured command kept for later)."""
        if seen:
            return "replayed_command", f"command {command.command_id} was acted on before"
        if (age := stale_age(command.issued_at, self.settings.command_ttl_s, COMMAND_CLOCK_SKEW_S)) is not None:
            return (
                "stale_command",
                f"signed {age:.0f}s ago; commands are taken for {self.settings.command_ttl_s:.0f}s (SCHOOLMIG_COMMAND_TTL_S)",
            )
        return None

    async def on_event(self, body: bytes, message: KafkaMessage) -> None:
        event = await self.accepted(message, body, EVENT, allowed=(SERVICE,))
        if isinstance(event, SnapshotReleased):
            await self.operations.advance(event)
        elif isinstance(event, ValidationCompleted):
            await self.on_validation(event)
        elif isinstance(event, SnapshotWithheld):
            await self.operations.withheld(event)
        elif isinstance(event, SchoolRejected) and not event.snapshot_id.startswith(CHANGE_ID_PREFIX):
            await self.operations.not_taken(event.school_id, event.snapshot_id, "refused", event.reason, event.message)
        elif isinstance(event, SnapshotIncomplete):
            missing = "its manifest" if not event.manifest_received else f"chunks {event.missing_chunks}"
            why = f"still missing {missing} after {event.waited_s:.0f}s: not released (publish the missing parts again)"
            await self.operations.not_taken(event.school_id, event.snapshot_id, "incomplete", "incomplete_snapshot", why)

    async def accepted(self, message: KafkaMessage, body: bytes, adapter: TypeAdapter[Any], *, allowed: tuple[str, ...]) -> Any:
        """The message, if it is signed by an allowed principal and is what the topic carries;
        else None, and it is in the dead letter with the reason (never acted on)."""
        record = message.raw_message
        principal = signed_by(record, body, self.keyring, allowed=allowed)
        if isinstance(principal, Unusable):
            await self.letters.reject(record, body, principal)
            return None
        try:
            parsed = adapter.validate_json(body)
        except ValidationError as exc:
            await self.letters.send(record, body, "invalid_internal_message", error_summary(exc))
            return None
        if isinstance(parsed, OperatorCommand):  # the authenticated operator, not what the body claims
            parsed = parsed.model_copy(update={"actor": principal.removeprefix(OPERATOR_PREFIX)})
        return parsed

    async def on_validation(self, event: ValidationCompleted) -> None:
        if event.run_id.startswith(OPERATOR_RUN_PREFIX):  # an operator's look (schoolmig validate): stored, that is all
            log.info("%s: operator's validation %s: %s", event.school_id, event.run_id, "ok" if event.ok else "issues")
            return
        if event.started_at and event.finished_at:
            self.metrics.validation_duration.record(
                (event.finished_at - event.started_at).total_seconds(), {"school_id": event.school_id}
            )
        current, snapshot_id = await self.store.phase_of(event.school_id)
        if snapshot_id != event.snapshot_id or current is not Phase.SYNCED:
            log.info("%s: validation %s is for an older state; ignored", event.school_id, event.run_id)
            return
        if event.ok:
            await self.store.transition(
                event.school_id,
                event.snapshot_id,
                Phase.VALIDATED,
                actor=ACTOR,
                reason=f"validation {event.run_id} found no critical issue",
            )
            current = Phase.VALIDATED
            await self.operations.phase_changed(event.school_id, current, f"validated by {event.run_id}: ready for cutover")
        else:
            critical = sum(1 for d in event.domains for i in d.issues if i.severity == "critical")
            self.metrics.errors.add(max(critical, 1), {"category": "consistency", "where": "validation"})
        await self.operations.report(event.school_id, event.snapshot_id, current, validation=event.model_dump(mode="json"))
