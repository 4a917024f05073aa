"""What the validator does with one poll of validation commands: the policy behind its handler.

Schools that sync together are validated together (their backups mapped in the worker
processes side by side), not one after another; the offsets are committed once all are
stored. Only the coordinator's signed commands are acted on (``shared.platform.signing``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from services.validator.run import validate_school
from shared.failures.policy import Unusable
from shared.ledger.schools import store_validation
from shared.platform.signing import publish
from shared.service import Wiring
from shared.wire.batching import signed_by
from shared.wire.messages import ValidationRequested, error_summary

log = logging.getLogger("schoolmig.validator")


class Validating(Wiring):
    """The validator's state (its pool, where it publishes) and its steps."""

    async def commands(self, sources: Sequence[Any], bodies: list[bytes]) -> None:
        """Every accepted command of the poll validated, side by side; one school's failure
        is its own (dead-lettered), the infrastructure's rewinds the poll once all have ended."""
        commands = []
        for record, body in zip(sources, bodies, strict=True):
            command = await self.accepted(record, body)
            if command is not None:
                commands.append((record, body, command))
        gate = asyncio.Semaphore(os.cpu_count() or 1)  # as many at once as there are worker processes

        async def one(record: Any, body: bytes, command: ValidationRequested) -> None:
            async with gate:
                try:
                    await self.validate(command)
                except Exception as exc:
                    await self.letters.isolate(record, body, exc, "validation")  # this school's, no one else's
                    log.exception("validation of %s/%s failed", command.school_id, command.snapshot_id)

        # Every validation ends before a failure rewinds the batch (no copy runs beside its redelivery).
        outcomes = await asyncio.gather(*(one(*c) for c in commands), return_exceptions=True)
        if failed := [o for o in outcomes if isinstance(o, BaseException)]:
            raise failed[0]

    async def accepted(self, record: Any, body: bytes) -> ValidationRequested | None:
        if isinstance(unusable := signed_by(record, body, self.keyring), Unusable):
            await self.letters.reject(record, body, unusable)
            return None
        try:
            return ValidationRequested.model_validate_json(body)
        except ValidationError as exc:
            await self.letters.send(record, body, "invalid_internal_message", error_summary(exc))
            return None

    async def validate(self, command: ValidationRequested) -> None:
        """One school validated, its result stored (with the differing values: the database may
        hold them) and announced without them."""
        result = await validate_school(
            self.pool, command.school_id, command.snapshot_id, command.run_id, changes_until=command.changes_until
        )
        await store_validation(self.pool, result)
        await publish(self.broker, self.keyring, result.for_publishing(), self.topics.events, key=command.school_id.encode())
        issues = Counter(i.type for d in result.domains for i in d.issues)
        log.info("validated %s/%s: %s %s", command.school_id, command.snapshot_id, "ok" if result.ok else "FAILED", dict(issues))
