"""What every service does before it consumes: logging, topics, schema, a pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from shared.platform.db import apply_migrations, create_pool
from shared.platform.kafka import ensure_topics, keep_topics
from shared.platform.logs import log_limited
from shared.platform.settings import Settings
from shared.platform.telemetry import set_ready

log = logging.getLogger("schoolmig.service")


async def prepare(settings: Settings, service: str, *, pool_size: int = 5) -> asyncpg.Pool:
    """Create missing topics, bring the schema up to date, open a pool (logging is set up by
    each service's module, before FastStream's first line).

    Safe when several replicas start at once: topic creation tolerates a concurrent
    creator and migrations take an advisory lock.
    """
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; run services through `schoolmig up` or set it")
    await ensure_topics(settings)
    watch_topics(settings)
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
