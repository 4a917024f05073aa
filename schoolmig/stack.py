"""Bringing the whole pipeline up and down: infrastructure, schema, topics, five services.

When ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` are unset, an embedded broker and an
embedded PostgreSQL are started (and stopped with the stack). Each service runs as its
own OS process (``python -m services.<name>``), exactly as it would in a container; a
service that dies is restarted. Stopping sends SIGTERM, so each service finishes its
in-flight batch and commits its offsets, then waits and, if need be, kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from shared.failures.policy import transient_delay
from shared.platform.db import apply_migrations
from shared.platform.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from shared.platform.kafka import ensure_topics
from shared.platform.settings import Settings, redact_dsn

log = logging.getLogger("schoolmig.stack")

SERVICES: tuple[str, ...] = ("ingest", "transform", "loader", "validator", "coordinator")
RESTART_DELAY_S = 1.0

LineSink = Callable[[str, str], None]


def print_prefixed(service: str, line: str) -> None:
    print(f"{service:<11}| {line}", flush=True)


@dataclass
class StackInfo:
    """What a running ``schoolmig up`` tells other commands (and the operator): where its
    servers and services are. Written to ``<state_dir>/stack.json``, so it holds no secret:
    the database URL is stored without its password (a command that needs it takes
    ``DATABASE_URL`` from its own environment first)."""

    kafka_bootstrap_servers: str
    database_url: str
    pid: int
    api_url: str = ""
    metrics: dict[str, str] = field(default_factory=dict)
    """Each service instance's Prometheus scrape URL, by instance name."""
    data_dir: str = ""
    """Where the embedded PostgreSQL keeps its data (empty: not embedded, or not kept)."""
    fsync: bool = True
    api_writes: bool = False
    """The API's POST endpoints are on (an API token is set)."""

    @staticmethod
    def path(state_dir: Path) -> Path:
        return state_dir / "stack.json"

    @classmethod
    def of(cls, stack: Stack, pid: int) -> StackInfo:
        return cls(
            stack.bootstrap_servers,
            redact_dsn(stack.database_url),
            pid,
            stack.api_url,
            {name: stack.metrics_url(name) for name in stack.instances() if stack.has_metrics(name)},
            str(stack.data_dir) if stack.durable and stack.postgres else "",
            stack.settings.embedded_fsync,
            stack.settings.api_token is not None,
        )

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = self.path(state_dir)
        path.write_text(json.dumps(self.__dict__, indent=2))
        path.chmod(0o600)

    def prometheus_targets(self) -> list[dict[str, object]]:
        """The scrape targets in Prometheus' file service discovery format, one per instance."""
        return [
            {
                "targets": [url.removeprefix("http://").removesuffix("/metrics")],
                "labels": {"job": f"schoolmig-{name.split('-')[0]}", "instance_name": name},
            }
            for name, url in sorted(self.metrics.items())
        ]

    def lines(self) -> list[str]:
        """Where everything is, for people."""
        out = [
            f"broker       KAFKA_BOOTSTRAP_SERVERS={self.kafka_bootstrap_servers}",
            f"database     {self.database_url}  (any password: from DATABASE_URL, never shown)",
        ]
        if self.data_dir:
            out.append(
                f"data         {self.data_dir}  (kept across restarts; fsync {'on' if self.fsync else 'OFF: a crash can lose commits'})"
            )
        out.append(f"API          {self.api_url or 'off'}  (GET /schools, /schools/{{id}}/mode, /health)")
        if self.api_url:
            out.append(f"status page  {self.api_url}/status")
            out.append(
                "API writes   "
                + (
                    "on (POST with the API token: SCHOOLMIG_API_TOKEN, or secrets/api_token of `schoolmig init`)"
                    if self.api_writes
                    else "off: no API token (run `schoolmig init` before `up`, or set SCHOOLMIG_API_TOKEN)"
                )
            )
        out += [f"metrics      {name:<14} {url}" for name, url in sorted(self.metrics.items())]
        return out

    def scrape_config(self, targets_file: Path) -> str:
        """A Prometheus ``scrape_configs`` entry that reads this stack's targets file."""
        return (
            "scrape_configs:\n"
            "  - job_name: schoolmig\n"
            "    file_sd_configs:\n"
            f"      - files: [{json.dumps(str(targets_file.resolve()))}]\n"
        )

    @classmethod
    def load_running(cls, state_dir: Path) -> StackInfo | None:
        try:
            info = cls(**json.loads(cls.path(state_dir).read_text()))
            os.kill(info.pid, 0)
        except (OSError, ValueError, TypeError):
            return None
        return info


def with_stack_keys(settings: Settings) -> Settings:
    """The settings, with signing keys made up for this stack where none are given
    (``shared.platform.signing``): a service key for the services, and a key for the operator running
    the tool, which the coordinator trusts. They live in memory and in the children's
    environment only; production sets its own."""
    update: dict[str, SecretStr] = {}
    if settings.service_key is None:
        update["service_key"] = SecretStr(secrets.token_urlsafe(32))
    if settings.operator_keys is None:
        key = settings.operator_key.get_secret_value() if settings.operator_key else secrets.token_urlsafe(32)
        update |= {"operator_keys": SecretStr(f"{settings.operator}={key}"), "operator_key": SecretStr(key)}
    return settings.model_copy(update=update)


def parse_replicas(text: str) -> dict[str, int]:
    """``transform=3,loader=2`` -> {"transform": 3, "loader": 2}; every name a service, every count >= 1."""
    replicas: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        if name not in SERVICES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--replicas: {part!r} is not SERVICE=N with SERVICE one of {', '.join(SERVICES)} and N >= 1")
        replicas[name] = int(count)
    return replicas


@dataclass
class _Child:
    name: str
    """The instance: the service's name for its first replica, ``<service>-<n>`` for the others."""
    service: str
    process: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    restarts: int = 0
    metrics_port: int = 0  # kept across restarts, so a scraper keeps finding it


@dataclass
class Stack:
    settings: Settings
    sink: LineSink = print_prefixed
    metrics_ports: bool = False
    replicas: dict[str, int] = field(default_factory=dict)
    """OS processes per service (default 1 each): replicas share their consumer groups."""
    kafka: EmbeddedKafka | None = None
    postgres: EmbeddedPostgres | None = None
    bootstrap_servers: str = ""
    database_url: str = ""
    _children: dict[str, _Child] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    """Each service's exit status after ``stop()``: 0 means it shut down cleanly."""
    _watch: asyncio.Task[None] | None = None
    _stopping: bool = False
    _infra_retry_at: float = 0.0
    _infra_failures: int = 0
    _topics_missing: bool = False
    api_port: int = 0
    """The coordinator's HTTP API (``SCHOOLMIG_API_PORT``, or a free port)."""
    durable: bool = False
    """``schoolmig up``: the embedded PostgreSQL keeps its data in ``<state_dir>/postgres``
    (fsync as ``SCHOOLMIG_EMBEDDED_FSYNC`` says) and a restart carries on with it; otherwise
    (``run``, tests) it lives in a temporary directory removed when the stack stops."""

    @property
    def data_dir(self) -> Path:
        """Where a durable stack's embedded PostgreSQL keeps its data."""
        return (self.settings.state_dir / "postgres").resolve()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def metrics_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self._children[service].metrics_port}/metrics"

    def has_metrics(self, instance: str) -> bool:
        return bool(self._children[instance].metrics_port)

    def instances(self) -> list[str]:
        """Every service instance's name (``loader``, ``loader-2``, …)."""
        return list(self._children)

    async def start(self) -> Stack:
        self.settings = with_stack_keys(self.settings)
        self.bootstrap_servers = self.settings.kafka_bootstrap_servers or ""
        self.database_url = self.settings.database_url or ""
        if not self.bootstrap_servers:
            self.kafka = await asyncio.to_thread(EmbeddedKafka().start)
            self.bootstrap_servers = self.kafka.bootstrap_servers
            log.info("embedded Kafka-compatible broker on %s", self.bootstrap_servers)
        if not self.database_url:
            server = (
                EmbeddedPostgres(data_dir=self.data_dir, durable=self.settings.embedded_fsync)
                if self.durable
                else EmbeddedPostgres()
            )
            if self.durable and (orphan := await asyncio.to_thread(server.stop_orphan)) is not None:
                log.warning("stopped PostgreSQL %d, left running on %s by an `up` that was killed", orphan, self.data_dir)
            self.postgres = await asyncio.to_thread(server.start)
            self.database_url = self.postgres.dsn
            log.info("embedded PostgreSQL on port %d", self.postgres.port)
        settings = self.settings.model_copy(
            update={"kafka_bootstrap_servers": self.bootstrap_servers, "database_url": self.database_url}
        )
        await apply_migrations(self.database_url)
        await ensure_topics(settings)
        self.api_port = self.settings.api_port or free_port()
        for service in SERVICES:
            for n in range(1, self.replicas.get(service, 1) + 1):
                name = service if n == 1 else f"{service}-{n}"
                self._children[name] = _Child(name, service, metrics_port=free_port() if self.metrics_ports else 0)
                await self._spawn(self._children[name])
        self._watch = asyncio.create_task(self._supervise())
        return self

    def _env(self) -> dict[str, str]:
        """The children's environment: ours, plus every setting this stack runs with."""
        env = dict(os.environ)
        for name, value in self.settings.model_dump(exclude={"kafka_bootstrap_servers", "database_url"}).items():
            if value is None:
                continue
            if isinstance(value, SecretStr):  # secrets too: the children's environment, never a file
                env[f"SCHOOLMIG_{name.upper()}"] = value.get_secret_value()
            elif isinstance(value, dict | list):  # as pydantic-settings reads a complex value: JSON
                env[f"SCHOOLMIG_{name.upper()}"] = json.dumps(value)
            else:
                env[f"SCHOOLMIG_{name.upper()}"] = str(value)
        env["KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap_servers
        env["DATABASE_URL"] = self.database_url
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("SCHOOLMIG_OPERATOR_KEY", None)  # no service signs as an operator
        return env

    async def _spawn(self, child: _Child) -> None:
        env = self._env()
        if child.metrics_port:
            env["SCHOOLMIG_METRICS_PORT"] = str(child.metrics_port)
        if child.name == "coordinator":  # its first replica serves the API
            env["SCHOOLMIG_API_PORT"] = str(self.api_port)
        elif child.service == "coordinator":
            env["SCHOOLMIG_API_PORT"] = "0"
        if child.service != "coordinator":  # only the coordinator checks operators' commands
            env.pop("SCHOOLMIG_OPERATOR_KEYS", None)
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            f"services.{child.service}",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        child.pump = asyncio.create_task(self._pump(child.name, child.process))

    async def _pump(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            self.sink(name, raw.decode(errors="replace").rstrip())

    async def _supervise(self) -> None:
        """Restart any service that exits while the stack is meant to be running, and the
        embedded broker and PostgreSQL this stack started (same address; the broker then
        gets its topics again)."""
        while not self._stopping:
            await self._supervise_infra()
            for child in self._children.values():
                process = child.process
                if process is not None and process.returncode is not None and not self._stopping:
                    child.restarts += 1
                    self.sink(child.name, f"exited with {process.returncode}; restart #{child.restarts}")
                    await asyncio.sleep(RESTART_DELAY_S)
                    if not self._stopping:
                        await self._spawn(child)
            await asyncio.sleep(0.2)

    async def _supervise_infra(self) -> None:
        """One restart at a time, backing off while it fails; never after ``stop`` began."""
        if time.monotonic() < self._infra_retry_at or self._stopping:
            return
        try:
            if self.postgres is not None and self.postgres.exited():
                self.sink("postgres", "exited; restarting on the same port and data")
                await asyncio.to_thread(self.postgres.restart)
                self.sink("postgres", "restarted")
            if self.kafka is not None and self.kafka.exited():
                self.sink("broker", "exited; restarting on the same address (its data is gone: memory storage)")
                await asyncio.to_thread(self.kafka.restart)
                self._topics_missing = True
            if self._topics_missing and self.kafka is not None:
                await ensure_topics(
                    self.settings.model_copy(
                        update={"kafka_bootstrap_servers": self.bootstrap_servers, "database_url": self.database_url}
                    )
                )
                self._topics_missing = False
                self.sink("broker", "restarted; topics created again")
            self._infra_failures = 0
        except Exception as exc:  # tried again after a pause that grows
            self._infra_failures += 1
            delay = transient_delay(self._infra_failures + 1)
            self._infra_retry_at = time.monotonic() + delay
            self.sink("stack", f"restarting infrastructure failed ({type(exc).__name__}); again in {delay:.0f}s")
        if self._stopping:  # stop() began meanwhile: what was just started goes too
            for server in (self.kafka, self.postgres):
                if server is not None:
                    await asyncio.to_thread(server.stop)

    def pid_of(self, name: str) -> int | None:
        process = self._children[name].process
        return process.pid if process else None

    async def stop(self) -> None:
        self._stopping = True
        if self._watch:  # it ends its round (a restart under way included) and sees the flag
            try:
                await asyncio.wait_for(asyncio.shield(self._watch), 120)
            except TimeoutError:
                self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        running = [c for c in self._children.values() if c.process and c.process.returncode is None]
        for child in running:
            assert child.process
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        for child in running:
            assert child.process
            try:
                await asyncio.wait_for(child.process.wait(), self.settings.graceful_timeout_s + 5)
            except TimeoutError:
                self.sink(child.name, "did not stop in time; killed")
                child.process.kill()
                await child.process.wait()
        for child in self._children.values():
            if child.process and child.process.returncode is not None:
                self.exit_codes[child.name] = child.process.returncode
            if child.pump:
                with contextlib.suppress(asyncio.CancelledError):
                    await child.pump
        if self.kafka:
            await asyncio.to_thread(self.kafka.stop)
        if self.postgres:
            await asyncio.to_thread(self.postgres.cleanup)
