"""Work done once, whichever replica runs it: a lease is a PostgreSQL session advisory lock,
held by a connection of its own.

Replicas of a service all try; one holds it. The lock lives as long as its connection, so a
replica that dies, or loses the database, lets go without anyone's help, and another one
takes it over at its next try (``held``). Nothing here needs clocks to agree. Holding is
re-checked on every ``held`` call (the connection must still answer that it holds the
lock), which is the fencing a holder does before each side effect: a holder whose
connection is gone stops. Lease names carry the deployment's topic prefix (``named``): two
deployments sharing one database do not share leases. A lease alone is not a fencing
*token*: a holder that lost it in the middle of a step finishes that step. Work whose late
writes would matter adds one (the cutover's epoch, ``services/coordinator/cutover.py``).
A session lock needs a session: not behind a transaction-pooling PgBouncer.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import asyncpg

log = logging.getLogger("schoolmig.leases")


def named(prefix: str, duty: str) -> str:
    """A lease's name within one deployment (its topic prefix)."""
    return f"{prefix}:{duty}"


def lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key for a lease's name (the same in every process)."""
    return int.from_bytes(hashlib.sha256(f"schoolmig:{name}".encode()).digest()[:8], "big", signed=True)


#: A holder whose host dies or is cut off must be noticed by the server in seconds, not the
#: two hours of the kernel's default TCP keepalive (its lock goes with its session).
_KEEPALIVE = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}
_HOLDS = """
SELECT EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
                  AND classid = (($1::bigint >> 32) & 4294967295)::oid AND objid = ($1::bigint & 4294967295)::oid
                  AND objsubid = 1)
"""


class Lease:
    """One lease, held or not by this process. Safe to share between tasks: checks are
    serialised (one connection, one question at a time)."""

    def __init__(self, dsn: str, name: str) -> None:
        self.dsn, self.name, self.key = dsn, name, lock_key(name)
        self._conn: asyncpg.Connection | None = None
        self._held = False
        self._lock = asyncio.Lock()

    async def held(self) -> bool:
        """True while this process holds the lease: taken now if free, kept if held and its
        connection still answers that it holds the lock; False (and let go) otherwise. Never
        raises on a lost database: that is simply not holding it."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.is_closed():
                    self._held = False
                    self._conn = await asyncpg.connect(self.dsn, timeout=5, server_settings=_KEEPALIVE)
                if self._held:
                    self._held = bool(await self._conn.fetchval(_HOLDS, self.key, timeout=5))
                    if not self._held:
                        log.warning("lease %s lost", self.name)
                else:
                    self._held = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=5))
                    if self._held:
                        log.info("lease %s taken", self.name)
                return self._held
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                if self._held:
                    log.warning("lease %s lost (its connection failed)", self.name)
                await self._close()
                return False

    async def release(self) -> None:
        """Let go (closing the connection releases the lock)."""
        async with self._lock:
            await self._close()

    async def _close(self) -> None:
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:  # already gone: so is the lock
                conn.terminate()
