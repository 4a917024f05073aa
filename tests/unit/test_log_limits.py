"""The Kafka client's repeated lines are limited (a lost broker must not flood the logs);
every kind still shows, and the next line says how many were held back."""

from __future__ import annotations

import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.platform.logs import RepeatLimit


def _record(msg: str, name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, (), None)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Unable connect to %s", "OffsetCommit failed", "Heartbeat failed"]),
            st.floats(min_value=0, max_value=5),
        ),
        max_size=60,
    )
)
def test_each_kind_at_most_once_per_window_and_none_lost_from_the_count(lines: list[tuple[str, float]]) -> None:
    now = [0.0]
    limit = RepeatLimit(every_s=10.0, clock=lambda: now[0])
    shown: dict[str, list[float]] = {}
    counted = 0
    for msg, gap in lines:
        now[0] += gap
        record = _record(msg)
        if limit.filter(record):
            shown.setdefault(msg, []).append(now[0])
            counted += 1
            if " more like it" in record.getMessage():
                counted += int(record.getMessage().split("(and ")[1].split(" ")[0])
    for times in shown.values():
        assert all(b - a >= 10.0 for a, b in zip(times, times[1:], strict=False))
    assert set(shown) == {msg for msg, _ in lines}  # every kind of trouble shows at least once
    held_still = sum(limit._held.values())
    assert counted + held_still == len(lines)  # every line shown, or counted in a later one, or still held


def test_json_lines_carry_ids_and_never_more() -> None:
    import json

    from shared.platform.logs import JsonFormatter

    formatter = JsonFormatter("coordinator")
    record = logging.LogRecord(
        "schoolmig.coordinator", logging.INFO, __file__, 1, "%s: synced; validation %s requested", ("school-7", "run-1"), None
    )
    line = json.loads(formatter.format(record))
    assert line["service"] == "coordinator" and line["level"] == "INFO" and line["logger"] == "schoolmig.coordinator"
    assert line["message"] == "school-7: synced; validation run-1 requested"
    assert line["school_id"] == "school-7" and "trace_id" not in line  # no span is recording here
    record = logging.LogRecord("schoolmig.ingest", logging.WARNING, __file__, 1, "re-drove %s", ("x",), None)
    record.snapshot_id = "snap-1"
    line = json.loads(formatter.format(record))
    assert line["snapshot_id"] == "snap-1" and "school_id" not in line
