"""Logging set-up: one line per event, service name first. Ids only, never personal data."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace


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

    MAX_KINDS = 1000
    """Kinds remembered at most (lines logged pre-formatted are each a kind of their own)."""

    def filter(self, record: logging.LogRecord) -> bool:
        suffix = self.passes((record.name, str(record.msg)))
        if suffix:
            record.msg = f"{record.msg}{suffix}"
        return suffix is not None

    def passes(self, kind: tuple[str, object], every_s: float | None = None) -> str | None:
        """Whether a line of this kind goes out now: None when held back; else what to add
        to it (how many were held back since the last one, or nothing)."""
        window = self.every_s if every_s is None else every_s
        now = self._clock()
        if len(self._last) > self.MAX_KINDS:  # forget the oldest half; at worst one line more of each
            for old in sorted(self._last, key=self._last.__getitem__)[: self.MAX_KINDS // 2]:
                self._last.pop(old, None)
                self._held.pop(old, None)
        last = self._last.get(kind)
        if last is not None and now - last < window:
            self._held[kind] = self._held.get(kind, 0) + 1
            return None
        self._last[kind] = now
        if (held := self._held.pop(kind, 0)) and last is not None:
            return f" (and {held} more like it in the last {now - last:.0f}s)"
        return ""


#: Fields a log call may pass with ``extra=``; the JSON format gives them their own keys.
#: Ids only: a name, an email or a phone never goes into a log line.
ID_FIELDS = ("school_id", "snapshot_id", "attempt_id", "run_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``service``, ``logger``, ``message``, the
    ids of ``ID_FIELDS`` a call passed, the current OpenTelemetry ``trace_id``/``span_id``
    when a span is recording, and ``exception`` (its text) when there is one."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({key: str(value) for key in ID_FIELDS if (value := getattr(record, key, None)) is not None})
        if "school_id" not in entry and _about_one_school(record):
            entry["school_id"] = str(record.args[0])  # type: ignore[index]
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"], entry["span_id"] = f"{context.trace_id:032x}", f"{context.span_id:016x}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _about_one_school(record: logging.LogRecord) -> bool:
    """The codebase's convention: a line about one school starts with its id
    (``log.info("%s: synced", school_id)``)."""
    return (
        record.name.split(".")[-1] in _SCHOOL_LOGGERS
        and isinstance(record.msg, str)
        and record.msg.startswith("%s: ")
        and isinstance(record.args, tuple)
        and bool(record.args)
    )


_SCHOOL_LOGGERS = {"ingest", "transform", "loader", "validator", "coordinator"}  # schoolmig.<service>


def setup_logging(service: str, level: str = "INFO", log_format: str = "text") -> None:
    """``log_format``: ``text`` for people, ``json`` for a log pipeline (``SCHOOLMIG_LOG_FORMAT``)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter(service)
        if log_format == "json"
        else logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # FastStream's loggers have handlers of their own (coloured, not JSON) and do not
    # propagate: every line goes through the one handler instead, in the one format.
    for name in ("faststream", "faststream.access", "faststream.access.kafka"):
        own = logging.getLogger(name)
        own.handlers[:] = []
        own.propagate = True
    # A crash's traceback too, as one line of this format (not Python's bare stderr dump).
    sys.excepthook = lambda kind, value, trace: logging.getLogger(f"schoolmig.{service}").critical(
        "crashed: %s", kind.__name__, exc_info=(kind, value, trace)
    )
    # Kafka client internals are chatty at INFO (group joins, metadata refreshes), and repeat
    # themselves while a broker is away.
    kafka = logging.getLogger("aiokafka")
    kafka.setLevel(logging.WARNING)
    if not any(isinstance(f, RepeatLimit) for f in handler.filters):
        handler.addFilter(_KafkaRepeats())


class _KafkaRepeats(RepeatLimit):
    """The repeat limit, for the Kafka client's lines only (the services' own are limited
    where they are logged, ``shared.platform.kafka.log_limited``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("aiokafka") or super().filter(record)


_repeats = RepeatLimit()
_limited = logging.getLogger("schoolmig")


def log_limited(level: int, template: str, *args: Any, every_s: float = 10.0) -> None:
    """One line per ``every_s`` per kind of trouble (:class:`RepeatLimit`, the one the Kafka
    client's lines go through): a lost broker must not flood the logs."""
    kind = (template, args[0] if args else "")  # the first argument names the trouble's owner (a task, a partition)
    if (suffix := _repeats.passes(kind, every_s)) is not None:
        _limited.log(level, template + suffix, *args)
