"""`schoolmig up`'s database, as a durable deployment needs it: data that outlives the
server, and a server left running by an `up` that was killed stopped by the next one."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from shared.platform.embedded import EmbeddedPostgres


async def test_a_server_left_by_a_killed_owner_is_stopped_and_its_data_carries_on(tmp_path: Path) -> None:
    data = tmp_path / "postgres"
    first = EmbeddedPostgres(data_dir=data, durable=True).start()
    conn = await asyncpg.connect(first.dsn)
    await conn.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
    await conn.close()
    orphan = first._process  # its owner "killed": nobody stops it
    assert orphan is not None

    second = EmbeddedPostgres(data_dir=data, durable=True)
    assert second.stop_orphan() == orphan.pid
    orphan.wait(timeout=30)
    second.start()
    try:
        conn = await asyncpg.connect(second.dsn)
        assert await conn.fetchval("SELECT n FROM kept") == 42
        await conn.close()
        assert EmbeddedPostgres(data_dir=tmp_path / "elsewhere").stop_orphan() is None
    finally:
        second.stop()
