"""Logging set-up: one line per event, service name first. Ids only, never personal data."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable


class RepeatLimit(logging.Filter):
    """One line per ``every_s`` for each kind of message (its logger and template), the next
    one saying how many were held back. A lost broker makes the Kafka client report every
    reconnection try (ten a second, per client): that must not bury the lines that matter."""

    def __init__(self, every_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every_s = every_s
        self._clock = clock
        self._last: dict[tuple[str, object], float] = {}
        self._held: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.msg)
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self.every_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return False
        self._last[kind] = now
        if (held := self._held.pop(kind, 0)) and last is not None:
            record.msg = f"{record.msg} (and {held} more like it in the last {now - last:.0f}s)"
        return True


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Kafka client internals are chatty at INFO (group joins, metadata refreshes), and repeat
    # themselves while a broker is away.
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(logging.WARNING)
    if not any(isinstance(f, RepeatLimit) for f in handler.filters):
        handler.addFilter(_KafkaRepeats())


class _KafkaRepeats(RepeatLimit):
    """The repeat limit, for the Kafka client's lines only (the services' own are limited
    where they are logged, ``shared.kafka._log_limited``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("aiokafka") or super().filter(record)
