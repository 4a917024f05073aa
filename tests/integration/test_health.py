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
from shared.embedded import free_port
from shared.settings import Settings
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
