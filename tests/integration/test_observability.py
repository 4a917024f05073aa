"""What the dashboards read, read for real.

- A real Prometheus (Debian's, ``deploy/prometheus/ensure-prometheus.sh``) scrapes every
  service of the embedded stack after a migration: every service is an ``up`` target, the
  alert rules of ``deploy/prometheus/alerts.yml`` load (``promtool``) and evaluate without
  error, and every query of the Grafana dashboard (``deploy/grafana/dashboards``) returns
  series, so no panel names a metric nobody exports.
- The OTLP path: a coordinator of its own (own database, own topics) exports over
  OTLP/HTTP to a small receiver here that decodes the protobuf, and the metric names,
  the resource and the values are the ones the services record.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import yaml
from aiohttp import web
from aiokafka import AIOKafkaProducer

from schoolmig.demo import school_dump
from schoolmig.sdk import publish_change
from schoolmig.stack import Stack
from shared.catalog.domains import Domain
from shared.platform.db import apply_migrations
from shared.platform.embedded import EmbeddedPostgres, free_port
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire.messages import Change, ChangeOp
from tests.integration.conftest import SERVICE_KEY, cli, migrate

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
DASHBOARDS = sorted((ROOT / "deploy/grafana/dashboards").glob("*.json"))
SCHOOL = "it-observed"


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed: run `bash deploy/prometheus/ensure-prometheus.sh` (make test does)"
    return found


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[str]:
    """A Prometheus scraping every service instance of the session stack every second, with
    the alert rules loaded; its base URL."""
    port = free_port()
    jobs: dict[str, list[str]] = {}  # one job per service, as in deploy/prometheus (the alerts match schoolmig-<service>)
    for name in stack.instances():
        jobs.setdefault(f"schoolmig-{name.split('-')[0]}", []).append(
            stack.metrics_url(name).removeprefix("http://").removesuffix("/metrics")
        )
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]} for job, targets in sorted(jobs.items())],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            _binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


async def _query(session: aiohttp.ClientSession, base: str, expr: str) -> list[dict[str, Any]]:
    async with session.get(f"{base}/api/v1/query", params={"query": expr}) as answer:
        body = await answer.json()
    assert body.get("status") == "success", (expr, body)
    return body["data"]["result"]


async def _eventually(what: str, check: Any, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if result := await check():
                return result
        except (aiohttp.ClientError, OSError) as exc:
            last = exc
        await asyncio.sleep(1.0)
    raise AssertionError(f"{what}: not within {timeout_s:.0f}s ({last})")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana's variables filled in."""
    found = []
    for path in DASHBOARDS:
        for panel in _panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                if expr := target.get("expr"):
                    found.append((f"{path.name}: {panel.get('title', '?')}", _fill(expr)))
    return found


def _panels(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in node.get("panels", []):
        yield panel
        yield from _panels(panel)  # rows hold panels


def _fill(expr: str) -> str:
    """Grafana's variables filled in, and the fallbacks that make a panel show 0 instead of
    nothing (``or vector(0)``, ``or … * 0``) taken off: what is left must have series itself."""
    expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
    expr = re.sub(r"\$\{?\w+(:\w+)?\}?", ".*", expr)  # template variables: every value
    expr = re.sub(r"\s+or\s+vector\(0\)\s*$", "", expr)
    return re.sub(r"\s+or\s+\(?(sum|count|max|min)?\b.*\*\s*0\)?\s*$", "", expr)


async def _provoke(settings: Settings, pool: asyncpg.Pool) -> None:
    """What the panels count: a messy school migrated (loaded, quarantined, phases, progress,
    durations) and cut over, one live change (received, judged by version), a school whose
    cutover fails its final validation (consistency and critical errors, a rollback), a message no one signed on an internal topic (refused, dead-lettered, an
    error), and a snapshot nobody could read on the public one (rejected by ingest)."""
    report = await migrate(
        settings,
        pool,
        SCHOOL,
        json.dumps(school_dump(2, seed=9, messy=True)).encode(),
        timeout_s=180,
        override_audit="observability test: messy on purpose",
    )
    assert report["phase"] == "validated"
    topics = Topics.from_settings(settings)
    room = {"id": "obs-room", "name": "Room 901", "location": "Floor 9", "capacity": 12, "type": "standard", "status": "active"}
    assert settings.kafka_bootstrap_servers
    await publish_change(
        settings.kafka_bootstrap_servers,
        settings.resolved_ingest_topic,
        SCHOOL,
        "obs-client",
        Change(
            op=ChangeOp.CREATE, domain=Domain.CLASSROOMS, record_id="obs-room", record=room, source_ts=datetime.now(UTC), seq=1
        ),
    )  # a live change: judged by version
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics.raw(Domain.STUDENTS), b'{"kind":"raw.batch","school_id":"it-observed"}')
        await producer.send_and_wait(topics.ingest, b"{not json")
    finally:
        await producer.stop()
    # A cutover that completes, and one that fails its final validation and rolls back.
    done = await asyncio.to_thread(cli, settings, "cutover", "--school", SCHOOL, "--reason", "observed", timeout_s=240)
    assert done.returncode == 0, done.stdout + done.stderr
    failing = f"{SCHOOL}-rollback"
    report = await migrate(settings, pool, failing, json.dumps(school_dump(3, seed=4, messy=False)).encode(), timeout_s=180)
    assert report["phase"] == "validated"
    await pool.execute("UPDATE users SET name = 'Tampered' WHERE school_id = $1 AND role = 'student'", failing)
    failed = await asyncio.to_thread(cli, settings, "cutover", "--school", failing, "--reason", "observed", timeout_s=240)
    assert failed.returncode == 1, failed.stdout + failed.stderr


async def test_prometheus_scrapes_every_service_and_every_panel_has_series(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, prometheus: str
) -> None:
    queries = dashboard_queries()
    assert DASHBOARDS and queries, "no Grafana dashboard with queries under deploy/grafana/dashboards"
    checked = subprocess.run([_binary("promtool"), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    await _provoke(settings, pool)

    async with aiohttp.ClientSession() as session:
        instances = len(stack.instances())

        async def all_up() -> bool:
            up = await _query(session, prometheus, 'up{job=~"schoolmig-.*"}')
            return len(up) == instances and all(r["value"][1] == "1" for r in up)

        await _eventually("every service instance an up target", all_up)

        async def rules_evaluated() -> list[dict[str, Any]] | None:
            async with session.get(f"{prometheus}/api/v1/rules") as answer:
                groups = (await answer.json())["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            done = rules and all(r.get("lastEvaluation", "").startswith("20") and r.get("health") == "ok" for r in rules)
            return rules if done else None

        rules = await _eventually("the alert rules loaded and evaluated", rules_evaluated)
        expected = yaml.safe_load(ALERTS.read_text())
        assert len(rules) == sum(len(g["rules"]) for g in expected["groups"])

        empty: list[str] = []
        for title, expr in queries:
            try:
                await _eventually(title, lambda expr=expr: _query(session, prometheus, expr), timeout_s=15)
            except AssertionError:
                empty.append(f"{title}: {expr}")
        assert not empty, "panels whose query returns no series after a migration:\n" + "\n".join(empty)


# ------------------------------------------------------------------------- OTLP


class OtlpReceiver:
    """The collector's OTLP/HTTP metrics endpoint, as far as this test needs: it decodes each
    ``ExportMetricsServiceRequest`` and keeps (resource attributes, metric name, points)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], str, list[tuple[dict[str, str], float]]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        )

        assert request.content_type == "application/x-protobuf"
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        export = ExportMetricsServiceRequest.FromString(body)
        for resource_metrics in export.resource_metrics:
            resource = {a.key: a.value.string_value for a in resource_metrics.resource.attributes}
            for scope in resource_metrics.scope_metrics:
                for metric in scope.metrics:
                    kind = metric.WhichOneof("data")
                    points = getattr(metric, kind).data_points
                    values = [
                        (
                            {a.key: a.value.string_value for a in p.attributes},
                            float(p.as_double if p.HasField("as_double") else p.as_int)
                            if kind in ("gauge", "sum")
                            else float(p.count),
                        )
                        for p in points
                    ]
                    self.received.append((resource, metric.name, values))
        return web.Response(body=ExportMetricsServiceResponse().SerializeToString(), content_type="application/x-protobuf")


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[OtlpReceiver, int]]:
    otlp = OtlpReceiver()
    app = web.Application()
    app.router.add_post("/v1/metrics", otlp.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield otlp, port
    finally:
        await runner.cleanup()


async def test_a_service_exports_its_metrics_over_otlp(
    settings: Settings, postgres: EmbeddedPostgres, pool: asyncpg.Pool, receiver: tuple[OtlpReceiver, int], tmp_path: Path
) -> None:
    otlp, port = receiver
    await pool.execute("DROP DATABASE IF EXISTS it_otlp")
    await pool.execute("CREATE DATABASE it_otlp")
    dsn = postgres.dsn.rsplit("/", 1)[0] + "/it_otlp"
    await apply_migrations(dsn)
    own = await asyncpg.connect(dsn)
    try:  # a school the coordinator's gauges report
        await own.execute(
            "INSERT INTO migration.school_phase (school_id, phase, snapshot_id) VALUES ('it-otlp-1', 'validated', 's')"
        )
    finally:
        await own.close()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "DATABASE_URL": dsn,
        "SCHOOLMIG_TOPIC_PREFIX": "it-otlp",
        "SCHOOLMIG_SERVICE_KEY": SERVICE_KEY,
        "SCHOOLMIG_OPERATOR_KEYS": "x=y",
        "SCHOOLMIG_STATE_DIR": str(tmp_path),
        "SCHOOLMIG_BACKUP_DIR": str(tmp_path / "backups"),
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "PYTHONPATH": str(ROOT),
    }
    coordinator = subprocess.Popen(
        [sys.executable, "-m", "services.coordinator"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:

        def seen(name: str) -> list[tuple[dict[str, str], str, list[tuple[dict[str, str], float]]]]:
            return [r for r in otlp.received if r[1] == name]

        async def exported() -> bool:
            phase = [v for _, _, points in seen("schoolmig.school.phase") for v in points if v[0].get("school_id") == "it-otlp-1"]
            ready = [v for _, _, points in seen("schoolmig.service.ready") for v in points if v[1] == 1.0]
            return bool(phase and ready)

        await _eventually("the coordinator's gauges over OTLP", exported, timeout_s=90)
        resource, _, _ = seen("schoolmig.service.ready")[-1]
        assert resource["service.name"] == "schoolmig-coordinator"
        phases = {
            p[0]["phase"]: p[1]
            for _, _, points in seen("schoolmig.school.phase")
            for p in points
            if p[0].get("school_id") == "it-otlp-1"
        }
        assert phases.get("validated") == 1.0
        assert all("@" not in value for _, _, points in otlp.received for labels, _ in points for value in labels.values())
    finally:
        coordinator.terminate()
        coordinator.wait(timeout=30)
