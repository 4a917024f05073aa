"""``make chaos``: the real stack, faults on purpose, and a table of what was lost.

Each scenario is a ``schoolmig run`` of the same demo schools (its own broker, supervised
by the run, and its own database on one PostgreSQL server the driver owns), with a fault
injected once the first snapshot has arrived (``tests/chaos/faults.py``). Every scenario
but the reference runs every service twice (``--replicas``):

- ``clean``: no fault, one process per service: the reference;
- ``kill-9``: SIGKILL to a random service process every ``--kill-every`` seconds, at
  least ``--kills`` per service;
- ``rolling-restart``: SIGTERM to every service process, one replica at a time;
- ``broker-lost``: the run's broker killed mid-run; the run restarts it (empty: memory
  storage) and the coordinator re-drives what was in flight from the verified backups;
- ``postgres-down``: PostgreSQL stopped mid-load for ``--pg-down`` seconds, then started
  again (by the driver, as an operator's supervisor would);
- ``cutover-kill``: the run cuts every school over (``run --cutover``), and the
  coordinator holding a running cutover's lease is killed, ``--cutover-kills`` times;
- ``duplicates``: every message on the ingest, raw, rows and quarantine topics delivered
  again, shuffled, ``--replays`` times.

After each, per table: the rows of every school, compared with the clean run by checksum;
``lost`` is source records neither loaded nor quarantined; ``duplicated`` is rows beyond
the clean run's (a table's row count minus the clean one's, when positive); schools that
reached the phase they must (``validated``, or ``completed`` when cut over); the time to
finish. Figures go to ``.bench/chaos.json``. Exit 1 if any row lost or duplicated
anything, differs from the reference, or left a school short of its phase.

    python -m tests.chaos --schools 20            # make chaos
    python -m tests.chaos --schools 4 --only broker-lost --keep
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from services.validator.digest import domain_checksum_sql
from shared.catalog.domains import Domain
from shared.catalog.tables import LOAD_ORDER
from shared.platform.embedded import EmbeddedPostgres
from tests.bench import write_figures
from tests.bench.bench_e2e import create_database, generate
from tests.chaos.faults import (
    Fault,
    Target,
    deliver_again,
    kill_broker,
    kill_cutover_holders,
    kill_services,
    postgres_down,
    rolling_restart,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Scenario:
    name: str
    replicas: str
    fault: Fault | None
    cutover: bool = False

    @property
    def ends_in(self) -> str:
        """The phase every school must reach: ``completed`` when the run cuts them over."""
        return "completed" if self.cutover else "validated"


async def scenario(plan: Scenario, files: list[Path], server: EmbeddedPostgres, timeout_s: float) -> dict[str, Any]:
    name = plan.name
    dsn = await create_database(server.dsn, name.replace(" ", "_").replace("-", "_"))
    state = Path(tempfile.mkdtemp(prefix="schoolmig-chaos-"))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS",)}
    env.update(
        {
            "DATABASE_URL": dsn,
            "SCHOOLMIG_STATE_DIR": str(state),
            "SCHOOLMIG_BACKUP_DIR": str(state / "backups"),
            "SCHOOLMIG_REDRIVE_AFTER_S": "10",
            "SCHOOLMIG_RUN_STALL_TIMEOUT_S": "180",
            "PYTHONPATH": str(ROOT),
        }
    )
    report = state / "report.json"
    command = [sys.executable, "-m", "schoolmig.cli", "run", *map(str, files), "--report", str(report)]
    if plan.replicas:
        command += ["--replicas", plan.replicas]
    if plan.cutover:
        command += ["--cutover"]
    started = time.monotonic()
    log_path = state / "run.log"  # the run's lines; the services' are in state/logs/
    log_file = open(log_path, "w")  # noqa: SIM115 (closed below, once the run ended)
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log_file, text=True, start_new_session=True
    )  # its stack too is killed if it hangs
    pool = await asyncpg.create_pool(dsn, min_size=0, max_size=2)  # no floor to restore (and log) while PostgreSQL is down
    injected = "none"
    try:
        if plan.fault is not None:
            while time.monotonic() - started < 60:
                try:
                    if await pool.fetchval("SELECT count(*) FROM migration.snapshots"):
                        break
                except (asyncpg.PostgresError, OSError):
                    pass
                await asyncio.sleep(0.2)
            try:
                injected = await plan.fault(Target(psutil.Process(process.pid), pool, server, state))
            except Exception as exc:  # the row says so (and fails): the run still ends, and is inspected
                injected = f"the fault itself failed: {type(exc).__name__}: {exc}"[:200]
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), timeout_s)
        except TimeoutError:
            injected += f"; the run did not end within {timeout_s:.0f}s"
    finally:
        if process.poll() is None:  # the CLI, its services and its broker
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log_file.close()
        await pool.close()
    seconds = time.monotonic() - started
    tail = log_path.read_text(errors="replace")[-300:] if process.returncode else ""
    return {
        "scenario": name,
        "faults": injected,
        "exit_code": process.returncode,
        "seconds": round(seconds, 1),
        "state": str(state),
        "stderr_tail": tail,
        **await inspect(dsn, plan.ends_in),
    }


async def inspect(dsn: str, ends_in: str) -> dict[str, Any]:
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
        )
        checksums = {}
        for school in schools:
            for domain in Domain:
                row = await conn.fetchrow(domain_checksum_sql(domain), school)
                checksums[f"{school}/{domain.value}"] = row["checksum"]
        rows = {spec.name: await conn.fetchval(f"SELECT count(*) FROM {spec.name}") for spec in LOAD_ORDER}
        done = await conn.fetchval("SELECT count(*) FROM migration.school_phase WHERE phase = $1", ends_in)
        parked = await conn.fetchval("SELECT count(*) FROM migration.parked_records")
    finally:
        await conn.close()
    return {
        "schools": len(schools),
        "schools_done": int(done),
        "ends_in": ends_in,
        "parked": int(parked),
        "source": int(counts["source"]),
        "loaded": int(counts["loaded"]),
        "quarantined": int(counts["quarantined"]),
        "lost": int(counts["source"]) - int(counts["loaded"]) - int(counts["quarantined"]),
        "rows": rows,
        "checksums": checksums,
    }


def plans(args: argparse.Namespace) -> list[Scenario]:
    replicas = args.replicas
    every = [
        Scenario("kill-9", replicas, kill_services(args.kill_every, args.kills)),
        Scenario("rolling-restart", replicas, rolling_restart(args.rolling_rounds)),
        Scenario("broker-lost", replicas, kill_broker(args.broker_kill_after)),
        Scenario("postgres-down", replicas, postgres_down(args.pg_down)),
        Scenario("cutover-kill", replicas, kill_cutover_holders(args.cutover_kills), cutover=True),
        Scenario("duplicates", replicas, deliver_again(args.replays, args.replay_every)),
    ]
    return [p for p in every if not args.only or p.name in args.only]


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schools", type=int, default=20)
    parser.add_argument(
        "--replicas",
        default="ingest=2,transform=2,loader=2,coordinator=2,validator=2",
        help="the replicas of every scenario but the clean reference (one of each)",
    )
    parser.add_argument("--kill-every", type=float, default=1.5)
    parser.add_argument("--kills", type=int, default=5, help="SIGKILLs per service at least")
    parser.add_argument("--rolling-rounds", type=int, default=1)
    parser.add_argument("--pg-down", type=float, default=60.0)
    parser.add_argument("--broker-kill-after", type=float, default=2.0, help="seconds after the first snapshot arrived")
    parser.add_argument("--cutover-kills", type=int, default=5)
    parser.add_argument("--replays", type=int, default=2, help="rounds of delivering every message again")
    parser.add_argument("--replay-every", type=float, default=4.0)
    parser.add_argument("--only", nargs="*", help="scenarios to run besides clean (default all)")
    parser.add_argument("--out", type=Path, default=Path(".bench/chaos.json"))
    parser.add_argument("--keep", action="store_true", help="leave the PostgreSQL server running, for a post-mortem")
    return parser.parse_args(argv)


async def run_chaos(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every scenario, then the table (written to ``args.out``): one row per scenario."""
    folder = Path(tempfile.mkdtemp(prefix="schoolmig-chaos-files-"))
    files = generate(folder, args.schools)
    server = EmbeddedPostgres(durable=True).start()  # a crash must not forget acknowledged commits
    try:
        clean = await scenario(Scenario("clean", "", None), files, server, 900)
        results = [clean] + [await scenario(plan, files, server, 900) for plan in plans(args)]
    finally:
        if args.keep:
            print(f"PostgreSQL kept for a post-mortem: {server.dsn} (one database per scenario)")
        else:
            server.cleanup()
    table = []
    for r in results:
        duplicated = sum(max(0, n - clean["rows"].get(t, 0)) for t, n in r["rows"].items())
        differing = sorted(k for k, v in r["checksums"].items() if clean["checksums"].get(k) != v)
        table.append(
            {
                "scenario": r["scenario"],
                "faults": r["faults"],
                "lost": r["lost"],
                "duplicated": duplicated,
                "checksums_differing": len(differing),
                "schools": f"{r['schools_done']}/{args.schools} {r['ends_in']}",
                "ok": not (r["lost"] or duplicated or differing)
                and r["schools_done"] == args.schools
                and r["exit_code"] == 0
                and not r["faults"].startswith(("the fault itself failed", "no fault:"))
                and "did not end" not in r["faults"],
                "seconds": r["seconds"],
                "exit_code": r["exit_code"],
            }
        )
    write_figures(
        args.out,
        {"schools": args.schools, "table": table, "runs": [{k: v for k, v in r.items() if k != "checksums"} for r in results]},
    )
    print(f"\n{'scenario':16} {'lost':>5} {'dup':>5} {'checks≠':>8} {'schools':>16} {'seconds':>8}  faults")
    for row in table:
        print(
            f"{row['scenario']:16} {row['lost']:>5} {row['duplicated']:>5} {row['checksums_differing']:>8} "
            f"{row['schools']:>16} {row['seconds']:>8}  {row['faults']}"
        )
    return table


async def main() -> int:
    table = await run_chaos(arguments())
    return 0 if all(row["ok"] for row in table) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
