"""Work done once, whichever replica runs it: a lease is a PostgreSQL session advisory lock,
held by a connection of its own.

Replicas of a service all try; one holds it. The lock lives as long as its connection, so a
replica that dies, or loses the database, lets go without anyone's help, and another one
takes it over at its next try (``held``). Nothing here needs clocks to agree. Holding is
re-checked on every ``held`` call (the connection must still answer), which is the fencing
a holder does before each side effect: a holder whose connection is gone stops.
"""

from __future__ import annotations

import hashlib
import logging

import asyncpg

log = logging.getLogger("schoolmig.leases")


def lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key for a lease's name (the same in every process)."""
    return int.from_bytes(hashlib.sha256(f"schoolmig:{name}".encode()).digest()[:8], "big", signed=True)


class Lease:
    def __init__(self, dsn: str, name: str) -> None:
        self.dsn, self.name, self.key = dsn, name, lock_key(name)
        self._conn: asyncpg.Connection | None = None
        self._held = False

    async def held(self) -> bool:
        """True while this process holds the lease: taken now if free, kept if held and its
        connection still answers; False (and let go) otherwise. Never raises on a lost
        database: that is simply not holding it."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._held = False
                self._conn = await asyncpg.connect(self.dsn, timeout=5)
            if self._held:
                await self._conn.fetchval("SELECT 1", timeout=5)
            else:
                self._held = bool(await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=5))
                if self._held:
                    log.info("lease %s taken", self.name)
            return self._held
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if self._held:
                log.warning("lease %s lost (its connection failed)", self.name)
            await self.release()
            return False

    async def release(self) -> None:
        """Let go (closing the connection releases the lock)."""
        self._held = False
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:  # already gone: so is the lock
                conn.terminate()
