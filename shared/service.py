"""What every service is made of, and does before it consumes: :func:`service_app` builds a
service's FastStream app the way every one is built (settings, logging, the guarded broker
and telemetry at start-up, never on import; a lifespan that brings the topics and schema up
to date, opens the pool and makes the service's policy object); the periodic rounds
and readiness every service reports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from faststream import ContextRepo, FastStream
from faststream.kafka import KafkaBroker, KafkaRouter

from shared.failures.deadletters import DeadLetters
from shared.failures.guard import guarded_broker
from shared.failures.policy import Stage
from shared.platform.db import apply_migrations, create_pool
from shared.platform.kafka import ensure_topics, keep_topics
from shared.platform.logs import log_limited, setup_logging
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.telemetry import PipelineMetrics, set_ready, setup_telemetry
from shared.platform.topics import Topics

log = logging.getLogger("schoolmig.service")


@dataclass
class Wiring:
    """What a service's policy object is made from: built at start-up, shared by its steps."""

    settings: Settings
    topics: Topics
    keyring: Keyring
    broker: KafkaBroker
    letters: DeadLetters
    metrics: PipelineMetrics
    pool: Any = None  # asyncpg.Pool, opened by the lifespan (None for a service without one)


def service_app(
    stage: Stage,
    routes: Callable[[Settings], KafkaRouter],
    policy: Callable[[Wiring], AbstractAsyncContextManager[Any]],
    *,
    settings: Settings | None = None,
    pool_size: int | None = 5,
) -> tuple[FastStream, Wiring]:
    """The stage's app: its handlers (``routes``) on the guarded broker, and a lifespan that
    prepares topics and schema, opens a pool of ``pool_size`` (None: none), then holds the
    ``policy`` object every handler asks for (``Context("policy")``) until the app stops.
    Call :func:`report_readiness` on the app once every hook is added."""
    settings = settings or Settings()
    setup_logging(stage.value, settings.log_level, settings.log_format)  # first: FastStream logs from its start
    broker, letters = guarded_broker(settings, stage)
    broker.include_router(routes(settings))
    metrics = setup_telemetry(stage.value, settings.metrics_port, settings.metrics_host)
    wiring = Wiring(settings, Topics.from_settings(settings), Keyring.for_service(settings), broker, letters, metrics)

    @asynccontextmanager
    async def lifespan(context: ContextRepo) -> AsyncIterator[None]:
        wiring.keyring.require()
        wiring.pool = await prepare(settings, pool_size)
        try:
            async with policy(wiring) as made:
                context.set_global("policy", made)
                yield
        finally:
            await letters.close()
            if wiring.pool is not None:
                await wiring.pool.close()

    return FastStream(broker, lifespan=lifespan), wiring


async def prepare(settings: Settings, pool_size: int | None) -> asyncpg.Pool | None:
    """Create missing topics and keep them; for a service with a database (``pool_size``), bring
    the schema up to date and open a pool (logging is already set up by :func:`service_app`,
    before FastStream's first line).

    Safe when several replicas start at once: topic creation tolerates a concurrent
    creator and migrations take an advisory lock.
    """
    if pool_size is not None and not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; run services through `schoolmig up` or set it")
    await ensure_topics(settings)
    watch_topics(settings)
    if pool_size is None:
        return None
    assert settings.database_url  # checked above
    await apply_migrations(settings.database_url)
    return await create_pool(settings.database_url, max_size=pool_size)


_topic_watch: list[asyncio.Task[None]] = []


def watch_topics(settings: Settings) -> None:
    """Check the topics every ``topic_check_s`` for the life of the process (``keep_topics``);
    started once per process, whoever asks."""
    if not _topic_watch:
        _topic_watch.append(start_periodic("topic check", settings.topic_check_s, lambda: keep_topics(settings)))


def start_periodic(what: str, interval_s: float, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
    """Run ``work`` every ``interval_s`` in the background; a failed round is logged and
    the next one retries (a monitor must outlive a database blip)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await work()
            except Exception as exc:  # a lost broker or database fails every round: said once in a while
                log_limited(logging.WARNING, "%s: round failed (%s); retrying next round", what, type(exc).__name__)
                log.debug("%s: round failed", what, exc_info=True)

    return asyncio.create_task(loop(), name=what)


async def stop_periodic(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def report_readiness(app: Any) -> None:
    """The process is ready once FastStream started every subscriber and every start-up hook
    registered before this call ran (call it last), and stops being ready when it stops
    (``schoolmig.health``, the container's health check). Subscribed is not yet assigned:
    a consumer may still be joining its group when the process reports ready."""

    async def ready() -> None:
        set_ready(True)

    async def stopping() -> None:
        set_ready(False)

    app.after_startup(ready)
    app.on_shutdown(stopping)
