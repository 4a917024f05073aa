"""Whose fault a failure is (``shared.failures.policy``): the infrastructure's is retried for as long as
it lasts, anything else is the message's and is tried a bounded number of times."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError
from hypothesis import given
from hypothesis import strategies as st

from shared.failures.policy import MAX_BACKOFF_S, Attempts, classify, transient_delay


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (ConnectionResetError(), "transient"),
        (TimeoutError(), "transient"),
        (KafkaConnectionError(), "transient"),
        (KafkaTimeoutError(), "transient"),  # not "retriable" in aiokafka, yet a broker away
        (BrokenProcessPool(), "transient"),  # a worker process died
        (asyncpg.DiskFullError("x"), "transient"),
        (asyncpg.ReadOnlySQLTransactionError("x"), "transient"),  # after a failover
        (asyncpg.AdminShutdownError("x"), "transient"),
        (asyncpg.DeadlockDetectedError("x"), "transient"),
        (asyncpg.QueryCanceledError("x"), "message"),  # a statement timeout: bisecting cures it
        (asyncpg.UniqueViolationError("x"), "message"),
        (asyncpg.CharacterNotInRepertoireError("x"), "message"),  # a NUL in text
        (asyncpg.DataError("x"), "message"),  # a value asyncpg cannot encode
        (MessageSizeTooLargeError(), "message"),
        (ValueError(), "message"),
        (RecursionError(), "message"),
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "message"),
    ],
)
def test_classify(exc: BaseException, fault: str) -> None:
    assert classify(exc) == fault


@given(st.integers(1, 10_000))
def test_the_transient_back_off_grows_and_is_capped(failures: int) -> None:
    assert 0.5 <= transient_delay(failures) <= MAX_BACKOFF_S
    assert transient_delay(failures + 1) >= transient_delay(failures)


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 5)), min_size=1, max_size=30))
def test_attempts_are_bounded_per_message_and_forgotten_on_success(failures: list[tuple[int, int]]) -> None:
    attempts = Attempts(max_attempts=3)
    for position in failures:
        attempts.failed([position])
    for position in set(failures):
        assert attempts.by_position[position] == failures.count(position)
        assert attempts.exhausted(attempts.by_position[position]) == (failures.count(position) >= 3)
    attempts.succeeded(set(failures), [])
    assert attempts.by_position == {}
