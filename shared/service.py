"""What every service does before it consumes: logging, topics, schema, a pool."""

from __future__ import annotations

import asyncpg

from shared.db import apply_migrations, create_pool
from shared.kafka import ensure_topics
from shared.logs import setup_logging
from shared.settings import Settings


async def prepare(settings: Settings, service: str, *, pool_size: int = 5) -> asyncpg.Pool:
    """Set up logging, create missing topics, bring the schema up to date, open a pool.

    Safe when several replicas start at once: topic creation tolerates a concurrent
    creator and migrations take an advisory lock.
    """
    setup_logging(service, settings.log_level)
    if not settings.database_url:
        raise RuntimeError("DATABASE_URL is not set; run services through `schoolmig up` or set it")
    await ensure_topics(settings)
    await apply_migrations(settings.database_url)
    return await create_pool(settings.database_url, max_size=pool_size)
