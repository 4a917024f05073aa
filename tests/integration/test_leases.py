"""Leases (``shared.platform.leases``) on the real PostgreSQL: one holder at a time, and a holder that
dies or loses its database lets go, so another replica takes over without anyone's help."""

from __future__ import annotations

import asyncpg

from shared.platform.leases import Lease
from shared.platform.settings import Settings


async def test_one_holder_at_a_time_and_a_dead_holder_lets_go(settings: Settings, pool: asyncpg.Pool) -> None:
    assert settings.database_url
    first, second = Lease(settings.database_url, "test.duty"), Lease(settings.database_url, "test.duty")
    other = Lease(settings.database_url, "test.other-duty")
    try:
        assert await first.held() and await first.held()  # taken, then kept
        assert not await second.held()
        assert await other.held()  # another name, another lease
        await first.release()  # a replica stopping
        assert await second.held() and not await first.held()

        # A holder whose connection the database drops (a crash, a restart, a network cut) no
        # longer holds it, and says so at its next check: the fencing before a side effect.
        holder_pid = await pool.fetchval(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = ($1::bigint & 4294967295)::oid"
            " AND classid = (($1::bigint >> 32) & 4294967295)::oid",
            second.key,
        )
        assert holder_pid is not None
        assert await pool.fetchval("SELECT pg_terminate_backend($1, 5000)", holder_pid)  # (waits for it to exit)
        assert await first.held()  # the lock went with the connection: taken over
        assert not await second.held()
    finally:
        for lease in (first, second, other):
            await lease.release()


async def test_many_tasks_asking_at_once_share_one_connection_and_one_lock(settings: Settings, pool: asyncpg.Pool) -> None:
    import asyncio

    assert settings.database_url
    lease = Lease(settings.database_url, "test.concurrent")
    try:
        assert all(await asyncio.gather(*(lease.held() for _ in range(20))))
        holders = await pool.fetchval(
            "SELECT count(DISTINCT pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objid = ($1::bigint & 4294967295)::oid AND classid = (($1::bigint >> 32) & 4294967295)::oid",
            lease.key,
        )
        assert holders == 1
        other = Lease(settings.database_url, "test.concurrent")
        assert not await other.held()  # held by the first (a second connection of it would not hold it either)
        await other.release()
    finally:
        await lease.release()
