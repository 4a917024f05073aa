"""A topic the broker refuses to create is an error naming it, not a silence (the client
returns per-topic error codes instead of raising). The embedded broker accepts anything, so
the broker's answer is stood in for here; the creation itself is tested on the real one
(``tests/integration/test_topic_keeper.py``)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from shared.platform import kafka
from shared.platform.settings import Settings


class _Admin:
    def __init__(self, errors: list[tuple[str, int, str | None]]) -> None:
        self.errors = errors

    def __call__(self, **_: Any) -> _Admin:
        return self

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, new: list[Any]) -> Any:
        return SimpleNamespace(
            topic_errors=[(t.name, *next((e[1:] for e in self.errors if e[0] == t.name), (0, None))) for t in new]
        )


async def test_a_refused_topic_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka_bootstrap_servers="broker:9092")
    refused = f"{settings.topic_prefix}.quarantine"
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", _Admin([(refused, 38, "replication factor larger than brokers")]))
    with pytest.raises(RuntimeError, match=rf"refused to create 1 topic\(s\): {refused} \(Kafka error 38\)"):
        await kafka.ensure_topics(settings)


async def test_already_there_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(kafka_bootstrap_servers="broker:9092")
    raced = f"{settings.topic_prefix}.events"
    monkeypatch.setattr(kafka, "AIOKafkaAdminClient", _Admin([(raced, 36, "exists")]))  # a concurrent creator won
    created = await kafka.ensure_topics(settings)
    assert raced in created
