"""``python -m schoolmig.health [--live]``: a service container's health check.

Run beside the service, in its container, with the service's environment:

- ``--live`` (liveness): the service's metrics endpoint answers on ``SCHOOLMIG_METRICS_PORT``
  (the process is there and serving; restart it if not);
- default (readiness): that, and the service says it serves (``schoolmig_service_ready`` is 1:
  started, consumers subscribed, not stopping), and the broker and the database answer
  from here. A service that is not ready should get no traffic and no scaling decision.

Exit 0 when healthy, 1 with one line saying what is not. Never prints a secret (the
database is named without its password).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import urllib.request

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient

from shared.platform.settings import Settings, redact_dsn

_READY = re.compile(r"^schoolmig_service_ready\{[^}]*\} 1(?:\.0)?$", re.MULTILINE)


def scrape(port: int, timeout_s: float = 3.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as answer:  # noqa: S310 (loopback)
        return answer.read().decode("utf-8", "replace")


async def reachable(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """None when the broker and the database both answer; else which one does not."""
    if settings.kafka_bootstrap_servers:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
        try:
            await asyncio.wait_for(admin.start(), timeout_s)
            await asyncio.wait_for(admin.list_topics(), timeout_s)
        except Exception as exc:
            return f"the broker {settings.kafka_bootstrap_servers} does not answer ({type(exc).__name__})"
        finally:
            await admin.close()
    if settings.database_url:
        try:
            conn = await asyncpg.connect(settings.database_url, timeout=timeout_s)
            try:
                await conn.fetchval("SELECT 1", timeout=timeout_s)
            finally:
                await conn.close()
        except Exception as exc:
            return f"the database {redact_dsn(settings.database_url)} does not answer ({type(exc).__name__})"
    return None


def check(settings: Settings, live: bool) -> str | None:
    """None when healthy; else why not."""
    if not settings.metrics_port:
        return "SCHOOLMIG_METRICS_PORT is not set: the service exposes nothing to check"
    try:
        text = scrape(settings.metrics_port)
    except OSError as exc:
        return f"the metrics endpoint on port {settings.metrics_port} does not answer ({type(exc).__name__})"
    if live:
        return None
    if not _READY.search(text):
        return "the service is not ready (starting, or stopping)"
    return asyncio.run(reachable(settings))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schoolmig.health", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--live", action="store_true", help="liveness only: the process answers")
    args = parser.parse_args(argv)
    problem = check(Settings(), args.live)
    print(problem or ("alive" if args.live else "ready"))
    return 1 if problem else 0


if __name__ == "__main__":
    sys.exit(main())
