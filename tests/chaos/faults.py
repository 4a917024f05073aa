"""The faults ``make chaos`` injects into a running ``schoolmig run``, one per scenario.

Each is an async function of the :class:`Target` (the run's CLI process, which owns the
stack, and the database and PostgreSQL server it uses) that returns what it did, for the
table. They act on the real processes and servers: signals, a stopped server, messages
delivered again on the real broker.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.platform.embedded import EmbeddedPostgres
from shared.platform.leases import lock_key, named
from shared.platform.settings import Settings
from shared.platform.topics import Topics

SERVICES = ("ingest", "transform", "loader", "coordinator", "validator")


@dataclass
class Target:
    cli: psutil.Process
    pool: asyncpg.Pool
    server: EmbeddedPostgres
    state: Path

    def running(self) -> bool:
        try:
            return self.cli.is_running() and self.cli.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


Fault = Callable[[Target], Awaitable[str]]


def children(cli: psutil.Process, needle: str) -> list[psutil.Process]:
    found = []
    try:
        candidates = cli.children(recursive=True)
    except psutil.Error:
        return []
    for p in candidates:
        try:
            if any(needle in part for part in p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def service_processes(cli: psutil.Process, service: str) -> list[psutil.Process]:
    """The service's replicas (not the worker processes a service spawns itself)."""
    return [p for p in children(cli, f"services.{service}") if not _is_worker(p)]


def _is_worker(p: psutil.Process) -> bool:
    try:
        return "multiprocessing" in " ".join(p.cmdline())
    except psutil.Error:
        return True


def broker_address(cli: psutil.Process) -> str:
    """The run's embedded broker, from its command line (``--listener-url tcp://host:port``)."""
    for broker in children(cli, "tansu"):
        line = broker.cmdline()
        return line[line.index("--listener-url") + 1].removeprefix("tcp://")
    raise RuntimeError("the run has no broker")


def kill_services(every_s: float, per_service: int) -> Fault:
    """SIGKILL to a random service process every ``every_s``, until each service had ``per_service``."""

    async def inject(target: Target) -> str:
        kills = dict.fromkeys(SERVICES, 0)
        rng = random.Random(7)
        while min(kills.values()) < per_service and target.running():
            service = rng.choice([s for s, n in kills.items() if n < per_service] or list(SERVICES))
            if victims := service_processes(target.cli, service):
                try:
                    os.kill(rng.choice(victims).pid, signal.SIGKILL)
                    kills[service] += 1
                except ProcessLookupError:
                    pass
            await asyncio.sleep(every_s)
        if min(kills.values()) < per_service:
            return "no fault: the run ended before every service was killed " + ", ".join(f"{s} ×{n}" for s, n in kills.items())
        return "SIGKILL " + ", ".join(f"{s} ×{n}" for s, n in kills.items())

    return inject


def rolling_restart(rounds: int) -> Fault:
    """SIGTERM to every service process, one replica at a time: the next only once the run's
    supervisor has the stopped one running again (as a rolling deploy would)."""

    async def inject(target: Target) -> str:
        await asyncio.sleep(1.0)
        stopped = 0
        for _ in range(rounds):
            for service in SERVICES:
                for victim in service_processes(target.cli, service):
                    if not target.running():
                        return f"SIGTERM ×{stopped} (the run ended first)"
                    wanted = len(service_processes(target.cli, service))
                    try:
                        victim.send_signal(signal.SIGTERM)
                        stopped += 1
                        await asyncio.to_thread(victim.wait, 60)
                    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
                        pass
                    deadline = time.monotonic() + 60
                    while len(service_processes(target.cli, service)) < wanted and time.monotonic() < deadline:
                        await asyncio.sleep(0.2)
                    await asyncio.sleep(1.0)  # it joins its groups before the next one goes
        return f"SIGTERM one replica at a time, {rounds} round(s): {stopped} processes"

    return inject


def kill_broker(after_s: float) -> Fault:
    async def inject(target: Target) -> str:
        await asyncio.sleep(after_s)
        brokers = children(target.cli, "tansu")
        for b in brokers:
            os.kill(b.pid, signal.SIGKILL)
        return f"broker SIGKILL ×{len(brokers)} {after_s:.0f}s in (restarted empty by the run)"

    return inject


def postgres_down(seconds: float) -> Fault:
    async def inject(target: Target) -> str:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(target.server.stop)  # a fast shutdown: every connection dropped
        await asyncio.sleep(seconds)
        await asyncio.to_thread(target.server.restart)
        return f"PostgreSQL stopped mid-load for {seconds:.0f}s, then started"

    return inject


def deliver_again(rounds: int, every_s: float) -> Fault:
    """Every message on the ingest, raw, rows and quarantine topics so far, published again in
    a shuffled order, ``rounds`` times: duplicates and out-of-order deliveries at every stage
    (signed messages stay valid: a replay is exactly what a redelivery looks like)."""

    async def inject(target: Target) -> str:
        rng = random.Random(11)
        topics = Topics.from_settings(Settings())
        names = [topics.ingest, *topics.raw_topics, *topics.rows_topics, topics.quarantine]
        sent = 0
        for _ in range(rounds):
            await asyncio.sleep(every_s)
            if not target.running():
                break
            bootstrap = broker_address(target.cli)
            messages = await _read_all(bootstrap, names)
            rng.shuffle(messages)
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 * 1024 * 1024)
            await producer.start()
            try:
                pending = [
                    await producer.send(topic, value, key=key, partition=partition, headers=headers)
                    for topic, partition, key, value, headers in messages
                ]
                await asyncio.gather(*pending)
            finally:
                await producer.stop()
            sent += len(messages)
        if not sent:
            return "no fault: nothing was on the topics to deliver again"
        return f"{sent} messages delivered again, shuffled, in {rounds} round(s)"

    return inject


async def _read_all(bootstrap: str, names: list[str]) -> list[tuple[str, int, bytes | None, bytes | None, list]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        partitions = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        out = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                out += [(tp.topic, tp.partition, r.key, r.value, list(r.headers)) for r in records if r.offset < ends[tp]]
        return out
    finally:
        await consumer.stop()


def kill_cutover_holders(kills: int) -> Fault:
    """SIGKILL to the coordinator that holds a running cutover's lease (found in ``pg_locks``),
    ``kills`` times: the other coordinator must take each cutover up and end it."""

    async def inject(target: Target) -> str:
        prefix = Settings().topic_prefix
        killed = 0
        while killed < kills and target.running():
            running = await _safe_fetch(target.pool, "SELECT school_id FROM migration.cutovers WHERE status = 'running'")
            keys = {lock_key(named(prefix, f"cutover:{r['school_id']}")): r["school_id"] for r in running}
            ports = {r["client_port"] for r in await _safe_fetch(target.pool, _LEASE_HOLDERS, list(keys))} if keys else set()
            victim = next((p for p in service_processes(target.cli, "coordinator") if _has_port(p, ports)), None)
            if victim is not None:
                try:
                    victim.send_signal(signal.SIGKILL)
                    killed += 1
                    await asyncio.sleep(3.0)  # it is started again; the other one takes its cutovers up
                except psutil.NoSuchProcess:
                    pass
            await asyncio.sleep(0.1)
        if not killed:
            return "no fault: no cutover was found running to kill its coordinator"
        return f"SIGKILL ×{killed} to the coordinator holding a running cutover"

    return inject


_LEASE_HOLDERS = """
SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a USING (pid)
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
   AND ((l.classid::bigint << 32) | l.objid::bigint) = ANY($1::bigint[])  -- the shift wraps into the sign, as the key
"""


async def _safe_fetch(pool: asyncpg.Pool, query: str, *args: object) -> list[asyncpg.Record]:
    try:
        return await pool.fetch(query, *args)
    except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
        return []


def _has_port(process: psutil.Process, ports: set[int]) -> bool:
    try:
        return any(c.laddr and c.laddr.port in ports for c in process.net_connections(kind="tcp"))
    except psutil.Error:
        return False
