"""The coordinator on the real stack: every phase through to the API, the gates, rollback,
the mode clients read, a restart mid-phase, and the metrics a dashboard scrapes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from typing import Any

import aiohttp
import asyncpg
import pytest

from schoolmig.demo import school_dump
from schoolmig.sdk import publish_snapshot
from schoolmig.stack import Stack
from shared.catalog.domains import Domain
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from tests.integration.conftest import API_TOKEN, cli, migrate, read_topic

pytestmark = pytest.mark.integration

ALL_PHASES = ["registered", "audited", "backed_up", "dual_write", "synced", "validated", "cutover", "completed"]


async def phases_of(pool: asyncpg.Pool, school: str) -> list[str]:
    rows = await pool.fetch("SELECT to_phase FROM migration.phase_transitions WHERE school_id = $1 ORDER BY id", school)
    return [r["to_phase"] for r in rows]


async def wait_for_phase(pool: asyncpg.Pool, school: str, wanted: set[str], timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        phase = await pool.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", school)
        if phase in wanted:
            return str(phase)
        await asyncio.sleep(0.2)
    raise AssertionError(f"{school} never reached {wanted}")


async def http(method: str, url: str, token: str | None = None, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.request(method, url, json=body, headers=headers) as response:
        return response.status, await response.json()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, matched on the given labels (None if absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def scrape(text: str, name: str, **labels: str) -> float:
    value = sample(text, name, **labels)
    assert value is not None, f"no {name} {labels} in the scrape"
    return value


async def test_a_school_goes_through_every_phase_to_the_api(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    school = "it-cutover"
    content = json.dumps(school_dump(5, seed=9, messy=False)).encode()
    report = await migrate(settings, pool, school, content, timeout_s=120)
    assert report["phase"] == "validated"
    status, mode = await http("GET", f"{stack.api_url}/schools/{school}/mode")
    assert status == 200 and (mode["mode"], mode["maintenance"], mode["phase"]) == ("hybrid", False, "validated")

    # The levers need the operator's token.
    status, _ = await http("POST", f"{stack.api_url}/schools/{school}/cutover")
    assert status == 401
    status, _ = await http("POST", f"{stack.api_url}/schools/{school}/cutover", token="wrong")
    assert status == 401
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{stack.api_url}/schools/{school}/cutover",
            data=b"{not json",
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        ) as response:
            assert response.status == 400
    status, _ = await http("GET", f"{stack.api_url}/schools/nobody/mode")
    assert status == 404
    status, answer = await http(
        "POST",
        f"{stack.api_url}/schools/{school}/cutover",
        token=API_TOKEN,
        body={"actor": "ana", "reason": "term starts Monday"},
    )
    assert status == 202, answer
    assert await wait_for_phase(pool, school, {"completed", "rolled_back"}) == "completed"

    assert await phases_of(pool, school) == ALL_PHASES
    trail = await pool.fetch(
        "SELECT to_phase, actor, reason FROM migration.phase_transitions WHERE school_id = $1 ORDER BY id", school
    )
    assert (trail[6]["actor"], trail[6]["reason"]) == ("ana", "term starts Monday")
    assert all(t["reason"] for t in trail)
    status, mode = await http("GET", f"{stack.api_url}/schools/{school}/mode")
    assert (mode["mode"], mode["maintenance"], mode["phase"]) == ("api", False, "completed")

    # The final sync was proven by a barrier acknowledged on every path, not by waiting.
    barrier = await pool.fetchrow("SELECT barrier_id, expected FROM migration.barriers WHERE school_id = $1", school)
    acks = await pool.fetchval("SELECT count(*) FROM migration.barrier_acks WHERE barrier_id = $1", barrier["barrier_id"])
    assert acks == barrier["expected"] == 3 * (3 + 10 * 3 * (3 + 3))  # ingest × (quarantine + raw × (rows + quarantine))
    steps = await pool.fetchrow("SELECT step, status FROM migration.cutovers WHERE school_id = $1", school)
    assert (steps["step"], steps["status"]) == ("maintenance_off", "completed")

    # Clients read the mode on the compacted control topic too; its last word is "api".
    assert settings.kafka_bootstrap_servers
    control = await read_topic(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).control,
        want=10_000,
        group=f"it-ctl-{uuid.uuid4()}",
        timeout_s=4,
    )
    modes = [m for m in control if m["school_id"] == school]
    assert [m["mode"] for m in modes][-1] == "api" and "hybrid" in [m["mode"] for m in modes]

    # After cutover, a browser snapshot would overwrite newer data: ingest refuses it, and says so.
    manifest = await publish_snapshot(settings.kafka_bootstrap_servers, settings.resolved_ingest_topic, school, content + b" ")
    events = await read_topic(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).events,
        want=10_000,
        group=f"it-ev-{uuid.uuid4()}",
        timeout_s=4,
    )
    rejected = [e for e in events if e["type"] == "school.rejected" and e["snapshot_id"] == manifest.snapshot_id]
    assert rejected and rejected[0]["reason"] == "school_cut_over"
    assert await pool.fetchval("SELECT released_at FROM migration.snapshots WHERE snapshot_id = $1", manifest.snapshot_id) is None

    # What a dashboard scrapes: counters with the right values, the phase gauge, the durations.
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.metrics_url("loader")) as r:
            loader = await r.text()
        async with session.get(stack.metrics_url("coordinator")) as r:
            coordinator = await r.text()
    for domain in ("students", "grades", "attendance"):
        assert (
            scrape(loader, "schoolmig_records_loaded_total", school_id=school, domain=domain)
            == report["domains"][domain]["loaded"]
        )
    assert scrape(coordinator, "schoolmig_school_phase", school_id=school, phase="completed") == 1
    assert scrape(coordinator, "schoolmig_school_phase", school_id=school, phase="validated") == 0
    assert scrape(coordinator, "schoolmig_sync_duration_seconds_count", school_id=school) == 1
    assert scrape(coordinator, "schoolmig_phase_transitions_total", phase="completed") >= 1
    assert "@" not in loader + coordinator  # no email, nothing personal, in any label

    # Consumer lag per group and topic, from committed offsets: drained once the school is done.
    rows_students = Topics.from_settings(settings).rows(Domain.STUDENTS)
    for _ in range(60):
        async with aiohttp.ClientSession() as session, session.get(stack.metrics_url("coordinator")) as r:
            coordinator = await r.text()
        lag = sample(coordinator, "schoolmig_consumer_lag", group="schoolmig-loader", topic=rows_students)
        if lag == 0 and sample(coordinator, "schoolmig_school_progress", school_id=school) == 1:
            break
        await asyncio.sleep(0.5)
    assert scrape(coordinator, "schoolmig_consumer_lag", group="schoolmig-loader", topic=rows_students) == 0
    assert scrape(coordinator, "schoolmig_school_progress", school_id=school) == 1  # sampled with the lag


async def test_a_failure_during_cutover_rolls_back_and_blocks_it(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    school = "it-rollback"
    report = await migrate(settings, pool, school, json.dumps(school_dump(6, seed=9, messy=False)).encode(), timeout_s=120)
    assert report["phase"] == "validated"
    # Between validation and cutover, the data goes wrong behind the pipeline's back.
    await pool.execute(
        "UPDATE users SET name = 'Tampered' WHERE school_id = $1 AND legacy_id = 'student-2' AND role = 'student'", school
    )

    done = await asyncio.to_thread(cli, settings, "cutover", "--school", school, "--reason", "go live", timeout_s=240)
    assert done.returncode == 1, done.stdout + done.stderr
    assert await phases_of(pool, school) == [*ALL_PHASES[:7], "rolled_back"]
    last = await pool.fetchrow(
        "SELECT actor, reason FROM migration.phase_transitions WHERE school_id = $1 ORDER BY id DESC LIMIT 1", school
    )
    assert "final_validation" in last["reason"] and "critical" in last["reason"]
    status, mode = await http("GET", f"{stack.api_url}/schools/{school}/mode")
    assert (mode["mode"], mode["maintenance"]) == ("hybrid", False)  # clients back on dual write, writes open again

    # A school whose validation did not pass cannot be cut over.
    status, answer = await http("POST", f"{stack.api_url}/schools/{school}/cutover", token=API_TOKEN)
    assert status == 409 and answer["outcome"].startswith("refused"), answer
    refused = await asyncio.to_thread(cli, settings, "cutover", "--school", school, timeout_s=240)
    assert refused.returncode == 1 and "cutover needs validated" in refused.stdout + refused.stderr

    async with aiohttp.ClientSession() as session, session.get(stack.metrics_url("coordinator")) as r:
        metrics = await r.text()
    assert scrape(metrics, "schoolmig_errors_total", category="critical") >= 1
    assert scrape(metrics, "schoolmig_errors_total", category="consistency") >= 1

    shown = await asyncio.to_thread(cli, settings, "status", "--json", timeout_s=240)
    assert {s["school_id"]: s["phase"] for s in json.loads(shown.stdout)}[school] == "rolled_back"


async def test_a_coordinator_killed_mid_phase_resumes_where_it_was(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    school = "it-restart"
    assert settings.kafka_bootstrap_servers
    await publish_snapshot(
        settings.kafka_bootstrap_servers,
        settings.resolved_ingest_topic,
        school,
        json.dumps(school_dump(7, seed=9, messy=False)).encode(),
    )
    await wait_for_phase(pool, school, {"dual_write"}, timeout_s=60)
    pid = stack.pid_of("coordinator")
    assert pid
    os.kill(pid, signal.SIGKILL)  # no goodbye: whatever it held in memory is gone
    assert await wait_for_phase(pool, school, {"validated"}, timeout_s=120) == "validated"
    assert stack.pid_of("coordinator") != pid
    assert await phases_of(pool, school) == ALL_PHASES[:6]  # each phase once, none skipped or repeated


async def test_schoolmig_migrate_drives_one_school_to_the_api(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, tmp_path: Any
) -> None:
    data = tmp_path / "school.json"
    data.write_text(json.dumps(school_dump(8, seed=9, messy=False)))
    done = await asyncio.to_thread(
        cli, settings, "migrate", str(data), "--school", "it-migrate", "--cutover", "--json", timeout_s=240
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(done.stdout)
    [school] = report["schools"]
    assert school["phase"] == "validated" and report["ok"]
    assert "→ completed" in done.stderr
    assert await phases_of(pool, "it-migrate") == ALL_PHASES


async def test_a_coordinator_killed_during_cutover_resumes_with_the_next_step(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-cut-restart"
    report = await migrate(settings, pool, school, json.dumps(school_dump(9, seed=9, messy=False)).encode(), timeout_s=120)
    assert report["phase"] == "validated"
    status, _ = await http(
        "POST", f"{stack.api_url}/schools/{school}/cutover", token=API_TOKEN, body={"actor": "ana", "reason": "go"}
    )
    assert status == 202
    step = None
    for _ in range(1000):  # the final sync takes a moment: kill the coordinator inside the cutover
        step = await pool.fetchval("SELECT step FROM migration.cutovers WHERE school_id = $1 AND status = 'running'", school)
        if step is not None:
            break
        await asyncio.sleep(0.01)
    pid = stack.pid_of("coordinator")
    assert pid and step in ("maintenance_on", "final_sync", "final_validation"), step
    os.kill(pid, signal.SIGKILL)

    assert await wait_for_phase(pool, school, {"completed", "rolled_back"}, timeout_s=120) == "completed"
    attempts = await pool.fetch("SELECT status, step FROM migration.cutovers WHERE school_id = $1", school)
    assert [(a["status"], a["step"]) for a in attempts] == [("completed", "maintenance_off")]  # one attempt, resumed
    assert await phases_of(pool, school) == ALL_PHASES
    status, mode = await http("GET", f"{stack.api_url}/schools/{school}/mode")
    assert (mode["mode"], mode["maintenance"]) == ("api", False)
