"""A cutover while the school keeps working, and the lossless way back after it.

The app writes through :class:`schoolmig.hybrid.HybridClient` the whole time. The operator
cuts the school over meanwhile: writes are held during maintenance (the client says so and
the app retries), the final sync's barrier and the final validation (the newest snapshot
plus every change) find nothing wrong, and the school ends on the API with every write the
app made. Then the way back: a rollback of a completed school is refused until its data is
exported and verified (``schoolmig export --verify``: re-ingested as a scratch school, every
record equal); the exported file holds exactly what the app holds, and the rollback names it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from schoolmig.hybrid import HybridClient, LocalData, Outbox, UseTheApi, WritesHeld, http_mode_source, kafka_publisher
from schoolmig.stack import Stack
from shared.catalog.domains import EXPORT_KEYS, LOCALSTORAGE_KEYS, Domain
from shared.platform.settings import Settings
from tests.integration.conftest import API_TOKEN, cli, migrate
from tests.integration.test_coordinator import http, wait_for_phase
from tests.integration.test_live_changes import BASE, T0, dump_of

SCHOOL = "it-cutover-live"


async def test_a_cutover_during_live_changes_loses_nothing_and_the_way_back_is_verified(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    assert settings.kafka_bootstrap_servers
    base = {d: {r["id"]: r for r in records} for d, records in BASE.items()}
    assert (await migrate(settings, pool, SCHOOL, dump_of(base, T0), timeout_s=120))["phase"] == "validated"
    local = LocalData(tmp_path / "local.json")
    local.path.write_text(json.dumps({d.value: list(records.values()) for d, records in base.items()}))
    client = HybridClient(
        SCHOOL,
        "desk-1",
        local=local,
        outbox=Outbox(tmp_path / "outbox"),
        publisher=kafka_publisher(settings.kafka_bootstrap_servers, settings.resolved_ingest_topic),
        mode=http_mode_source(stack.api_url),
    )

    held = 0
    written = 0

    async def app() -> None:  # keeps writing until the school runs on the API
        nonlocal held, written
        payments = list(base[Domain.PAYMENTS].values())
        n = 0
        while True:
            n += 1
            try:
                if n % 3:
                    await client.update(Domain.PAYMENTS, {**payments[n % len(payments)], "amount": 1000 + n})
                else:
                    await client.create(
                        Domain.CLASSROOMS,
                        {**next(iter(base[Domain.CLASSROOMS].values())), "id": f"room-live-{n}", "name": f"Room live {n}"},
                    )
                written += 1
            except WritesHeld:
                held += 1
            except UseTheApi:
                return
            await asyncio.sleep(0.05)

    writer = asyncio.create_task(app())
    await asyncio.sleep(1.0)  # writes flowing
    status, answer = await http(
        "POST",
        f"{stack.api_url}/schools/{SCHOOL}/cutover",
        token=API_TOKEN,
        body={"actor": "ana", "reason": "go live during school hours"},
    )
    assert status == 202, answer
    assert await wait_for_phase(pool, SCHOOL, {"completed", "rolled_back"}, timeout_s=240) == "completed", await pool.fetch(
        "SELECT step, status, error FROM migration.cutovers WHERE school_id = $1", SCHOOL
    )
    await asyncio.wait_for(writer, 30)
    assert written > 10 and client.outbox.pending() == []

    run = await pool.fetchrow(
        "SELECT ok, result FROM migration.validation_runs WHERE school_id = $1 AND finished_at IS NOT NULL"
        " ORDER BY finished_at DESC LIMIT 1",
        SCHOOL,
    )
    issues = [(d["domain"], i["type"]) for d in run["result"]["domains"] for i in d["issues"] if i["severity"] != "info"]
    assert run["ok"] and issues == [], issues

    # The way back: refused until the data is exported and verified.
    status, answer = await http("POST", f"{stack.api_url}/schools/{SCHOOL}/rollback", token=API_TOKEN)
    assert status == 409 and "export" in answer["outcome"], answer
    out = tmp_path / "back-to-the-browser.json"
    done = await asyncio.to_thread(
        cli, settings, "export", "--school", SCHOOL, "--out", str(out), "--verify", "--json", timeout_s=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["verified"] is True
    exported = {LOCALSTORAGE_KEYS[k]: json.loads(v) for k, v in json.loads(out.read_bytes()).items() if k in LOCALSTORAGE_KEYS}
    mine = local.read()
    for domain in base:  # the file holds what the app holds: every write, in any domain it touched
        assert {r["id"]: r for r in exported[domain]} == {r["id"]: r for r in mine[domain.value]}, domain

    status, answer = await http(
        "POST",
        f"{stack.api_url}/schools/{SCHOOL}/rollback",
        token=API_TOKEN,
        body={"actor": "ana", "reason": "the API misbehaves"},
    )
    assert status == 202, answer
    phase, mode = await pool.fetchrow(
        "SELECT p.phase, m.mode FROM migration.school_phase p JOIN migration.school_modes m USING (school_id)"
        " WHERE school_id = $1",
        SCHOOL,
    )
    assert (phase, mode) == ("rolled_back", "localStorage")
    reason = await pool.fetchval(
        "SELECT reason FROM migration.phase_transitions WHERE school_id = $1 ORDER BY id DESC LIMIT 1", SCHOOL
    )
    assert json.loads(done.stdout)["export_id"] in reason

    # The other format carries the six domains it has keys for, and says what it leaves out.
    other = tmp_path / "export.json"
    done = await asyncio.to_thread(
        cli, settings, "export", "--school", SCHOOL, "--format", "mockdata_export", "--out", str(other), "--json"
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(other.read_bytes())
    assert {EXPORT_KEYS[k] for k in document if k in EXPORT_KEYS} == set(EXPORT_KEYS.values())
