"""Whose fault a failure is, and what to do about it: the classification, the one back-off,
the bounded attempts, and the quick retry of a database operation (no consumer, no broker here).

Every consumer meets two kinds of failure and must never confuse them:

- **transient**: the infrastructure (the database restarting, the broker unreachable, a
  deadlock). The message is fine; it is tried again after a back-off, for as long as it
  takes, and only its own partitions wait (see ``shared.failures.guard.Guard``).
- **the message's own** (anything else: a value the database refuses, a parser's limit, a
  bug meeting an input nobody foresaw). Trying again cannot help for long: after
  :data:`MAX_ATTEMPTS` the message goes to the dead letter with its reason and the
  exception's class, and the partition moves on.

That is Spring Kafka's ``DefaultErrorHandler`` with a dead-letter recoverer, or Kafka
Connect's ``errors.tolerance=all`` with a DLQ, with the retry kept off the consumer's
thread: a failing partition is paused, never slept on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Iterable
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import asyncpg
from aiokafka.errors import KafkaError, KafkaTimeoutError

from shared.platform.telemetry import count_error

log = logging.getLogger("schoolmig.failures")
T = TypeVar("T")
Fault = Literal["transient", "message"]

#: Tries of one message before it is the message's fault for good (the first included).
MAX_ATTEMPTS = 3
MAX_BACKOFF_S = 30.0


#: Errors worth retrying: the server or the network, not the data.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # the protocol's state after a connection died mid-COPY
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


#: SQLSTATE classes and codes that say the server is in trouble, not the data: connection
#: (08), transaction rollback (40: serialization, deadlock), insufficient resources (53:
#: disk full, out of memory, too many connections), operator intervention (57: shutdown),
#: system error (58: I/O), read-only after a failover (25006), lock timeout (55P03). Except
#: what one batch's size or shape can cause, which bisecting cures and retrying never would:
#: a statement timeout (57014) and a configuration limit (53400).
TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "40", "53", "57", "58"})
TRANSIENT_SQLSTATES = frozenset({"25006", "55P03"})
BATCH_SHAPED_SQLSTATES = frozenset({"57014", "53400"})


def classify(exc: BaseException) -> Fault:
    """``transient`` when the infrastructure failed, ``message`` when the input did."""
    if isinstance(exc, asyncpg.DataError):  # asyncpg could not encode a value: the data's
        return "message"
    if isinstance(exc, KafkaTimeoutError):  # a broker or leader away longer than the request timeout
        return "transient"
    if isinstance(exc, KafkaError):  # a broker error says itself whether retrying helps
        return "transient" if exc.retriable else "message"
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        if state in BATCH_SHAPED_SQLSTATES:
            return "message"
        if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES:
            return "transient"
    if isinstance(exc, (*TRANSIENT_ERRORS, TimeoutError, BrokenExecutor)):  # BrokenExecutor: a worker process died
        return "transient"
    return "message"


class Stage(enum.StrEnum):
    """Where a failure happened: the service whose consumer, or the command line, met it.
    Every dead letter and every error count carries one (Kafka Connect's ``Stage``)."""

    INGEST = "ingest"
    TRANSFORM = "transform"
    LOADER = "loader"
    VALIDATOR = "validator"
    COORDINATOR = "coordinator"


@dataclass(frozen=True)
class Unusable:
    """A message a consumer will not act on: why (fields and error kinds only, never values:
    the input may hold personal data). It goes to the dead letter, never looped on."""

    reason: str
    detail: str
    refused: bool = False
    """True when the signature is what failed (``shared.platform.signing``): counted and alerted on."""


def backoff(failures: int, *, base: float, cap: float = float("inf")) -> float:
    """The one back-off: ``base`` doubling with each failure (the first waits ``base``), never
    past ``cap``. Every wait before trying again is this formula with its own base and cap."""
    return min(cap, base * 2 ** min(max(0, failures - 1), 32))  # a long outage must not overflow it


def transient_delay(failures: int) -> float:
    """Back-off before the ``failures``-th retry of an infrastructure failure: 0.5 s doubling to 30 s."""
    return backoff(failures, base=0.5, cap=MAX_BACKOFF_S)


def retry_delay(attempt: int) -> float:
    """Pause before trying a failing message again (it is most likely its own fault: briefly)."""
    return backoff(attempt, base=0.2, cap=1.0)


#: Tries of one database operation (:func:`with_retries`) before the error is raised.
DB_ATTEMPTS = 4


async def with_retries(operation: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``operation``; when the connection or the server failed (:data:`TRANSIENT_ERRORS`:
    a lost connection, a restart, a deadlock) wait 1, 2, 4 s (the back-off, ±20% jitter) and
    try again, then give up by raising (the caller's consumer rewinds through the guard;
    nothing is lost). Anything else, a read-only server after a failover included, is raised
    at once: the guard's per-partition back-off takes it from there."""
    for attempt in range(1, DB_ATTEMPTS + 1):
        try:
            return await operation()
        except TRANSIENT_ERRORS as exc:
            if isinstance(exc, asyncpg.DataError):  # a value the client cannot encode: it will not get better
                raise
            count_error("transient", what)
            if attempt == DB_ATTEMPTS:
                raise
            wait = backoff(attempt, base=1.0) * random.uniform(0.8, 1.2)
            log.warning("%s: transient %s (attempt %d), retrying in %.1fs", what, type(exc).__name__, attempt, wait)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


@dataclass
class Attempts:
    """Failures so far, per message position and per partition (in memory: a restarted
    consumer grants a message another :data:`MAX_ATTEMPTS`; that is still bounded)."""

    max_attempts: int = MAX_ATTEMPTS
    by_position: dict[Hashable, int] = field(default_factory=dict)
    transient_by_partition: dict[Hashable, int] = field(default_factory=dict)

    def failed(self, positions: Iterable[Hashable]) -> int:
        """Count one more failed try of these messages; the most any of them has had."""
        most = 0
        for position in positions:
            self.by_position[position] = n = self.by_position.get(position, 0) + 1
            most = max(most, n)
        return most

    def exhausted(self, tries: int) -> bool:
        return tries >= self.max_attempts

    def failed_transiently(self, partitions: Iterable[Hashable]) -> float:
        """Count an infrastructure failure on these partitions; the back-off to wait."""
        worst = 0
        for partition in partitions:
            self.transient_by_partition[partition] = n = self.transient_by_partition.get(partition, 0) + 1
            worst = max(worst, n)
        return transient_delay(worst)

    def succeeded(self, positions: Iterable[Hashable], partitions: Iterable[Hashable]) -> None:
        for position in positions:
            self.by_position.pop(position, None)
        for partition in partitions:
            self.transient_by_partition.pop(partition, None)

    def forget(self, positions: Iterable[Hashable]) -> None:
        """These messages are settled (dead-lettered): their counts are no longer needed."""
        for position in positions:
            self.by_position.pop(position, None)
