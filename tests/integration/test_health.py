"""The containers' health check (``python -m schoolmig.health``) against real services: a
running service is live and ready; a port with no service is neither; a service whose
database cannot be reached from where the check runs is live but not ready."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

from schoolmig.stack import Stack
from shared.platform.embedded import free_port
from shared.platform.settings import Settings
from tests.integration.conftest import SERVICE_KEY


def _check(settings: Settings, port: int, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SCHOOLMIG_METRICS_PORT": str(port),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "DATABASE_URL": database_url or settings.database_url or "",
        "SCHOOLMIG_SERVICE_KEY": SERVICE_KEY,
    }
    return subprocess.run(
        [sys.executable, "-m", "schoolmig.health", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_health_check_tells_ready_live_and_dead(stack: Stack, settings: Settings) -> None:
    port = urlsplit(stack.metrics_url("loader")).port
    assert port
    deadline = time.monotonic() + 90  # the session's services may still be starting
    while (ready := await asyncio.to_thread(_check, settings, port)).returncode and time.monotonic() < deadline:
        await asyncio.sleep(1.0)
    assert (ready.returncode, ready.stdout.strip()) == (0, "ready"), ready.stdout + ready.stderr
    live = await asyncio.to_thread(_check, settings, port, "--live")
    assert (live.returncode, live.stdout.strip()) == (0, "alive")

    nobody = await asyncio.to_thread(_check, settings, free_port(), "--live")
    assert nobody.returncode == 1 and "does not answer" in nobody.stdout

    unreachable = f"postgresql://schoolmig:not-shown@127.0.0.1:{free_port()}/schoolmig"
    cut_off = await asyncio.to_thread(_check, settings, port, database_url=unreachable)
    assert cut_off.returncode == 1 and "database" in cut_off.stdout, cut_off.stdout
    assert "not-shown" not in cut_off.stdout + cut_off.stderr  # named without its password
    still_live = await asyncio.to_thread(_check, settings, port, "--live", database_url=unreachable)
    assert still_live.returncode == 0


async def test_json_logs_are_json_every_line(settings: Settings) -> None:
    """A real service in ``SCHOOLMIG_LOG_FORMAT=json``: every line it prints, FastStream's own
    and a refusal's included, is one JSON object with the fields a log pipeline keys on."""
    import json
    import signal

    from aiokafka import AIOKafkaProducer

    from shared.catalog.domains import Domain
    from shared.platform.topics import Topics

    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "SCHOOLMIG_TOPIC_PREFIX": "it-json",
        "SCHOOLMIG_SERVICE_KEY": SERVICE_KEY,
        "SCHOOLMIG_METRICS_PORT": str(port),
        "SCHOOLMIG_LOG_FORMAT": "json",
        "SCHOOLMIG_LOG_LEVEL": "INFO",
    }
    service = subprocess.Popen(
        [sys.executable, "-m", "services.transform"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while (ready := await asyncio.to_thread(_check, settings, port)).returncode and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        assert ready.returncode == 0, ready.stdout
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
        await producer.start()
        try:  # nobody signed it: refused, a warning line
            await producer.send_and_wait(Topics(prefix="it-json", ingest="it-json.ingest").raw(Domain.STUDENTS), b"{}")
        finally:
            await producer.stop()
        await asyncio.sleep(3.0)
    finally:
        service.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(service.communicate, timeout=60)
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line[:300]!r}") from None
        assert {"ts", "level", "service", "logger", "message"} <= set(entry), entry
        parsed.append(entry)
    assert {e["service"] for e in parsed} == {"transform"}
    assert any(e["logger"].startswith("faststream") for e in parsed), "FastStream's own lines went elsewhere"
