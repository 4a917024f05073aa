"""``make chaos``: the real stack, faults on purpose, and a table of what was lost.

Each scenario is a ``schoolmig run`` of the same demo schools (its own broker, supervised
by the run, and its own database on one PostgreSQL server the driver owns), with a fault
injected once the first snapshot has arrived:

- ``clean``: no fault, one process per service: the reference;
- ``kill -9``: replicas (ingest, transform, loader, coordinator ×2), and SIGKILL to a
  random service process every ``--kill-every`` seconds, at least 5 per service;
- ``broker lost``: the run's broker killed mid-run; the run restarts it (empty: memory
  storage) and the coordinator re-drives what was in flight from the verified backups;
- ``postgres down``: PostgreSQL killed mid-load, down for ``--pg-down`` seconds, then
  started again (by the driver, as an operator's supervisor would).

After each, per table: the rows of every school, compared with the clean run by checksum;
``lost`` is source records neither loaded nor quarantined; ``duplicated`` is rows beyond
the clean run's (a table's row count minus the clean one's, when positive); schools
validated; the time to finish. Figures go to ``.bench/chaos.json``. Exit 1 if any row
lost or duplicated anything, or left a school unvalidated.

    python -m tests.chaos --schools 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from services.validator.digest import domain_checksum_sql
from shared.domains import Domain
from shared.embedded import EmbeddedPostgres
from shared.tables import LOAD_ORDER
from tests.bench import write_figures
from tests.bench.bench_e2e import create_database, generate

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "transform", "loader", "coordinator", "validator")
Fault = Callable[[psutil.Process, asyncpg.Pool, EmbeddedPostgres], Awaitable[str]]


def children(cli: psutil.Process, needle: str) -> list[psutil.Process]:
    found = []
    for p in cli.children(recursive=True):
        try:
            if any(needle in part for part in p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


async def kill_services(every_s: float, per_service: int) -> Fault:
    async def inject(cli: psutil.Process, pool: asyncpg.Pool, server: EmbeddedPostgres) -> str:
        kills = dict.fromkeys(SERVICES, 0)
        rng = random.Random(7)
        while min(kills.values()) < per_service and cli.is_running() and cli.status() != psutil.STATUS_ZOMBIE:
            service = rng.choice([s for s, n in kills.items() if n < per_service] or list(SERVICES))
            victims = [p for p in children(cli, f"services.{service}") if "multiprocessing" not in " ".join(p.cmdline())]
            if victims:
                victim = rng.choice(victims)
                try:
                    os.kill(victim.pid, signal.SIGKILL)
                    kills[service] += 1
                except ProcessLookupError:
                    pass
            await asyncio.sleep(every_s)
        return ", ".join(f"{s} ×{n}" for s, n in kills.items())

    return inject


async def kill_broker(cli: psutil.Process, pool: asyncpg.Pool, server: EmbeddedPostgres) -> str:
    await asyncio.sleep(2.0)
    brokers = children(cli, "tansu")
    for b in brokers:
        os.kill(b.pid, signal.SIGKILL)
    return f"broker SIGKILL ×{len(brokers)} (restarted empty by the run)"


def postgres_down(seconds: float) -> Fault:
    async def inject(cli: psutil.Process, pool: asyncpg.Pool, server: EmbeddedPostgres) -> str:
        await asyncio.sleep(2.0)
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(seconds)
        await asyncio.to_thread(server.restart)
        return f"PostgreSQL killed, down {seconds:.0f}s, started again"

    return inject


async def scenario(name: str, files: list[Path], server: EmbeddedPostgres, replicas: str, fault: Fault | None,
                   timeout_s: float) -> dict[str, Any]:  # fmt: skip
    dsn = await create_database(server.dsn, name.replace(" ", "_").replace("-", "_"))
    state = Path(tempfile.mkdtemp(prefix="schoolmig-chaos-"))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    env.update({"DATABASE_URL": dsn, "SCHOOLMIG_STATE_DIR": str(state), "SCHOOLMIG_BACKUP_DIR": str(state / "backups"),
                "SCHOOLMIG_REDRIVE_AFTER_S": "10", "SCHOOLMIG_RUN_STALL_TIMEOUT_S": "180", "PYTHONPATH": str(ROOT)})  # fmt: skip
    report = state / "report.json"
    command = [sys.executable, "-m", "schoolmig.cli", "run", *map(str, files), "--report", str(report)]
    if replicas:
        command += ["--replicas", replicas]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cli = psutil.Process(process.pid)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    injected = "none"
    try:
        if fault is not None:
            while time.monotonic() - started < 60:
                try:
                    if await pool.fetchval("SELECT count(*) FROM migration.snapshots"):
                        break
                except (asyncpg.PostgresError, OSError):
                    pass
                await asyncio.sleep(0.2)
            injected = await fault(cli, pool, server)
        _, stderr = await asyncio.wait_for(asyncio.to_thread(process.communicate), timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
        await pool.close()
    seconds = time.monotonic() - started
    return {"scenario": name, "faults": injected, "exit_code": process.returncode, "seconds": round(seconds, 1),
            "stderr_tail": stderr[-300:] if process.returncode else "", **await inspect(dsn, report)}  # fmt: skip


async def inspect(dsn: str, report: Path) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        schools = [r["school_id"] for r in await conn.fetch("SELECT DISTINCT school_id FROM migration.snapshots ORDER BY 1")]
        counts = await conn.fetchrow(
            """
            SELECT (SELECT coalesce(sum((value)::int), 0) FROM migration.snapshots s, jsonb_each_text(s.audit -> 'source_counts')
                     WHERE s.released_at IS NOT NULL) AS source,
                   (SELECT count(*) FROM migration.loaded_records) AS loaded,
                   (SELECT count(*) FROM migration.quarantine) AS quarantined
            """
        )  # fmt: skip
        checksums = {}
        for school in schools:
            for domain in Domain:
                row = await conn.fetchrow(domain_checksum_sql(domain), school)
                checksums[f"{school}/{domain.value}"] = row["checksum"]
        rows = {spec.name: await conn.fetchval(f"SELECT count(*) FROM {spec.name}") for spec in LOAD_ORDER}
        validated = await conn.fetchval("SELECT count(*) FROM migration.school_phase WHERE phase = 'validated'")
    finally:
        await conn.close()
    return {"schools": len(schools), "schools_validated": int(validated), "source": int(counts["source"]),
            "loaded": int(counts["loaded"]), "quarantined": int(counts["quarantined"]),
            "lost": int(counts["source"]) - int(counts["loaded"]) - int(counts["quarantined"]),
            "rows": rows, "checksums": checksums}  # fmt: skip


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=10)
    parser.add_argument("--kill-every", type=float, default=1.5)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per service at least")
    parser.add_argument("--pg-down", type=float, default=20.0)
    parser.add_argument("--only", nargs="*", help="scenarios to run besides clean (default all)")
    parser.add_argument("--out", type=Path, default=Path(".bench/chaos.json"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="schoolmig-chaos-files-"))
    files = generate(folder, args.schools)
    server = EmbeddedPostgres(durable=True).start()  # a crash must not forget acknowledged commits
    replicas = "ingest=2,transform=2,loader=2,coordinator=2"
    plans: list[tuple[str, str, Fault | None]] = [
        ("kill-9", replicas, await kill_services(args.kill_every, args.kills)),
        ("broker-lost", "", kill_broker),
        ("postgres-down", "", postgres_down(args.pg_down)),
    ]
    plans = [p for p in plans if not args.only or p[0] in args.only]
    try:
        clean = await scenario("clean", files, server, "", None, 900)
        results = [clean] + [await scenario(name, files, server, rep, fault, 900) for name, rep, fault in plans]
    finally:
        server.cleanup()
    table = []
    for r in results:
        duplicated = sum(max(0, n - clean["rows"].get(t, 0)) for t, n in r["rows"].items())
        differing = sorted(k for k, v in r["checksums"].items() if clean["checksums"].get(k) != v)
        table.append({"scenario": r["scenario"], "faults": r["faults"], "lost": r["lost"], "duplicated": duplicated,
                      "checksums_differing": len(differing), "schools_validated": f"{r['schools_validated']}/{r['schools']}",
                      "seconds": r["seconds"], "exit_code": r["exit_code"]})  # fmt: skip
    write_figures(args.out, {"schools": args.schools, "table": table, "runs": [{k: v for k, v in r.items() if k != "checksums"}
                                                                              for r in results]})  # fmt: skip
    print(f"\n{'scenario':14} {'lost':>5} {'dup':>5} {'checks≠':>8} {'validated':>10} {'seconds':>8}  faults")
    for row in table:
        print(f"{row['scenario']:14} {row['lost']:>5} {row['duplicated']:>5} {row['checksums_differing']:>8} "
              f"{row['schools_validated']:>10} {row['seconds']:>8}  {row['faults']}")  # fmt: skip
    bad = [r for r in table if r["lost"] or r["duplicated"] or r["checksums_differing"]
           or r["schools_validated"] != f"{args.schools}/{args.schools}"]  # fmt: skip
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
