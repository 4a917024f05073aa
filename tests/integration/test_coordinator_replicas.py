"""Two coordinators, one killed inside a cutover: the cutover still ends, once, and the
school's phase and mode agree.

A second deployment (its own database and topic prefix, on the session's servers) runs two
coordinator processes. One holds the leader lease (sync checks, resuming orphaned
cutovers); a cutover is run by whichever holds that school's cutover lease. The coordinator
that started the cutover is killed with SIGKILL mid-way: its database connection dies, its
leases go with it, and the cutover is taken up from its last completed step.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.stack import Stack
from shared.platform.db import apply_migrations, create_pool
from shared.platform.embedded import EmbeddedPostgres
from shared.platform.settings import Settings
from tests.integration.conftest import API_TOKEN, ServiceLogs, migrate
from tests.integration.test_coordinator import http, wait_for_phase

SCHOOL = "it-two-coordinators"


@pytest.fixture
async def second(
    settings: Settings, postgres: EmbeddedPostgres, pool: asyncpg.Pool, tmp_path: Path
) -> AsyncIterator[tuple[Stack, Settings, asyncpg.Pool, ServiceLogs]]:
    await pool.execute("DROP DATABASE IF EXISTS it_replicas")
    await pool.execute("CREATE DATABASE it_replicas")
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/it_replicas"
    own = settings.model_copy(
        update={"database_url": dsn, "topic_prefix": "it2", "backup_dir": tmp_path / "backups", "api_port": 0}
    )
    await apply_migrations(dsn)
    logs = ServiceLogs()
    stack = await Stack(own, sink=logs, replicas={"coordinator": 2}).start()
    own_pool = await create_pool(dsn)
    try:
        yield stack, own, own_pool, logs
    finally:
        await stack.stop()
        await own_pool.close()


async def test_a_cutover_outlives_the_coordinator_running_it(second: tuple[Stack, Settings, asyncpg.Pool, ServiceLogs]) -> None:
    stack, settings, pool, logs = second
    report = await migrate(settings, pool, SCHOOL, json.dumps(school_dump(4, seed=4, messy=False)).encode(), timeout_s=180)
    assert report["phase"] == "validated"
    status, answer = await http(
        "POST", f"{stack.api_url}/schools/{SCHOOL}/cutover", token=API_TOKEN, body={"actor": "ana", "reason": "go"}
    )
    assert status == 202, answer
    step = None
    for _ in range(2000):  # inside the cutover: the final sync takes a moment
        step = await pool.fetchval("SELECT step FROM migration.cutovers WHERE school_id = $1 AND status = 'running'", SCHOOL)
        if step is not None:
            break
        await asyncio.sleep(0.01)
    pid = stack.pid_of("coordinator")  # the one that took the command over HTTP runs it
    assert pid and step in ("maintenance_on", "final_sync", "final_validation"), step
    os.kill(pid, signal.SIGKILL)

    assert await wait_for_phase(pool, SCHOOL, {"completed", "rolled_back"}, timeout_s=180) == "completed"
    attempts = await pool.fetch("SELECT status, step FROM migration.cutovers WHERE school_id = $1", SCHOOL)
    assert [(a["status"], a["step"]) for a in attempts] == [("completed", "maintenance_off")]  # one attempt, taken up
    mode = await pool.fetchrow("SELECT mode, maintenance FROM migration.school_modes WHERE school_id = $1", SCHOOL)
    assert (mode["mode"], mode["maintenance"]) == ("api", False)  # phase and mode agree
    taken_up = [line for service in ("coordinator", "coordinator-2") for line in logs.of(service) if "resuming cutover" in line]
    assert taken_up, "a coordinator took the cutover up"
    # Only one coordinator ran the sync checks at a time: each school was moved to synced once.
    synced = await pool.fetchval(
        "SELECT count(*) FROM migration.phase_transitions WHERE school_id = $1 AND to_phase = 'synced'", SCHOOL
    )
    assert synced == 1
