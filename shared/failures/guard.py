"""The guard around every handler, and the broker it is bound to.

Every exception a handler raises is judged here by :func:`shared.failures.policy.classify`:
the infrastructure's is retried with the one back-off while only its partitions wait; a
message's own is tried again a few times, then dead-lettered (:mod:`shared.failures.deadletters`)
with its stage and exception, and committed past.
"""

from __future__ import annotations

import logging
from typing import Any

from faststream import BaseMiddleware
from faststream.kafka import KafkaBroker

from shared.failures.deadletters import DeadLetters
from shared.failures.policy import Attempts, Stage, classify, retry_delay, transient_delay
from shared.platform.kafka import hold, make_broker
from shared.platform.logs import log_limited
from shared.platform.settings import Settings
from shared.platform.telemetry import count_error
from shared.platform.topics import Topics

log = logging.getLogger("schoolmig.failures")


class Guard(BaseMiddleware):
    """Every failure of a handler is classified (``shared.failures.policy``), never looped on.

    - transient (the infrastructure): the message's partitions are sought back to it and
      paused for a growing back-off; the other partitions go on; it is tried again for as
      long as it takes. The commit that follows stops at the message.
    - the message's own: tried again (briefly paused) up to ``MAX_ATTEMPTS``, then sent to
      the dead letter with ``handler_failed`` and the exception's class, and committed past.
      For a batch subscriber that is every message of the batch; its handler isolates one
      message's or record's trouble itself, so this is the last resort, not the rule.

    The exception is swallowed either way, so the acknowledgement that follows commits the
    consumer's positions, which the seek put back where they must be. Bound per broker by
    :func:`guarded_broker`.
    """

    dead_letters: DeadLetters
    attempts: Attempts
    stage: Stage

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        records = _records(msg)
        positions = [(r.topic, r.partition, r.offset) for r in records]
        partitions = {(r.topic, r.partition) for r in records}
        try:
            result = await call_next(msg)
        except Exception as exc:
            await self._failed(exc, msg, records, positions)
            return None
        self.attempts.succeeded(positions, partitions)
        return result

    async def _failed(self, exc: Exception, msg: Any, records: list[Any], positions: list[Any]) -> None:
        where = f"{self.stage}: {records[0].topic}[{records[0].partition}]@{records[0].offset}" if records else self.stage
        if classify(exc) == "transient":
            delay = self.attempts.failed_transiently({(r.topic, r.partition) for r in records})
            count_error("transient", f"{self.stage} handler")
            log_limited(logging.WARNING, "%s: transient %s; its partition(s) wait %.1fs", where, type(exc).__name__, delay)
            hold(msg.consumer, _earliest(records), delay)
            return
        tries = self.attempts.failed(positions)
        if not self.attempts.exhausted(tries):
            log.warning(
                "%s: %s (attempt %d of %d); trying again",
                where,
                type(exc).__name__,
                tries,
                self.attempts.max_attempts,
                exc_info=exc if tries == 1 else None,
            )
            hold(msg.consumer, _earliest(records), retry_delay(tries))
            return
        bodies = msg.body if isinstance(msg.body, list) else [msg.body]
        detail = f"the {self.stage} handler failed {tries} times on it ({type(exc).__name__})"
        for record, body in zip(records, bodies, strict=False):
            try:
                await self.dead_letters.send(record, bytes(body), "handler_failed", detail, error_class=type(exc).__name__)
            except Exception as failure:
                if classify(failure) == "transient":  # the broker or database is away: all of it again later
                    log_limited(
                        logging.ERROR, "%s: cannot dead-letter (%s); its partition(s) wait", where, type(failure).__name__
                    )
                    hold(msg.consumer, _earliest(records), transient_delay(self.attempts.max_attempts))
                    return  # (those already dead-lettered will be again: a duplicate letter, never a loss)
                # It can never be written (refused for good): looping would stall the partition
                # forever. The trace is this line, the metric, and the message at its offset.
                log.error(
                    "%s[%d]@%d: cannot dead-letter it (%s): committed past it; it stays readable at its offset "
                    "until the topic's retention ends",
                    record.topic,
                    record.partition,
                    record.offset,
                    type(failure).__name__,
                )
                count_error("critical", f"{self.stage}: dead letter failed")
        self.attempts.forget(positions)
        count_error("input", f"{self.stage}: handler_failed")


def _records(msg: Any) -> list[Any]:
    raw = msg.raw_message
    return list(raw) if isinstance(raw, (tuple, list)) else [raw]


def _earliest(records: list[Any]) -> dict[tuple[str, int], int]:
    earliest: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        earliest[key] = min(earliest.get(key, r.offset), r.offset)
    return earliest


def guarded_broker(settings: Settings, stage: Stage) -> tuple[KafkaBroker, DeadLetters]:
    """The stage's broker, every handler on it behind the :class:`Guard`, and the dead letters
    it and the handlers send (tagged with ``stage``)."""
    guard: Any = type("Guard", (Guard,), {"attempts": Attempts(settings.max_attempts), "stage": stage})
    broker = make_broker(settings, client_id=stage.value, middlewares=[guard])
    guard.dead_letters = DeadLetters(broker, Topics.from_settings(settings).deadletter, settings, stage)
    return broker, guard.dead_letters
