"""Benchmark: the whole migration against the simplest alternatives, in one invocation.

The same generated school files (the spec's volumes, messy as real data), the same
embedded PostgreSQL, one after another:

1. **direct script**: one process, the project's own parsing and mapping functions, COPY
   into the real schema's tables (parents first, one transaction), no broker: the
   simplest thing a user could write, and nothing like it accounts or validates;
2. **dlt** merge on (school_id, id) of the same files, in its own virtual environment
   (``.bench/dlt-venv``, made on first use) - skipped with a note when it cannot install;
3. **schoolmig**: ``schoolmig run`` of the files, as an operator runs it, on the embedded
   broker and this PostgreSQL: the services start, every school is audited, backed up,
   loaded and validated record by record; timed from the first snapshot received until
   the last school is validated (start-up excluded, and reported apart).

It prints target rows per second for each and the ratios, per-service CPU seconds and
peak RSS (sampled every 0.5 s, replicas added up / maxed), the broker's and the CLI's
peak RSS, per-stage throughput, and writes ``.bench/e2e.json``.

    make bench                     # 100 schools
    SCHOOLS=1000 make bench        # the scale case
    python -m tests.bench.bench_e2e --schools 20 --replicas transform=2,loader=2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from schoolmig.demo import school_dump
from services.loader.convert import rows_by_table
from services.loader.parking import newest_per_record, plan
from services.transform.records import transform
from shared.catalog.tables import LOAD_ORDER
from shared.platform.db import _init_connection, apply_migrations
from shared.platform.embedded import EmbeddedKafka, EmbeddedPostgres
from shared.source.snapshot import parse_snapshot
from shared.wire.fanout import plan_fanout
from shared.wire.messages import MappedRecord, RawRecord, SnapshotFormat, SnapshotManifest
from tests.bench import write_figures

ROOT = Path(__file__).resolve().parents[2]
DLT_VENV = ROOT / ".bench" / "dlt-venv"
DLT_VERSION = "1.31.0"


def generate(folder: Path, schools: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(1, schools + 1):
        path = folder / f"school-{index}.json"
        path.write_text(json.dumps(school_dump(index, seed=42), ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    return paths


async def create_database(dsn: str, name: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE DATABASE {name}")  # a fixed name of this module, never input
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


async def count_target_rows(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return sum([await conn.fetchval(f"SELECT count(*) FROM {spec.name}") for spec in LOAD_ORDER])
    finally:
        await conn.close()


# --------------------------------------------------------------------------- 1. direct script


async def direct_script(files: list[Path], dsn: str) -> dict[str, Any]:
    """Per school: parse, map and COPY into the real tables in one transaction, parents first,
    in one process: the floor any pipeline is measured by."""
    await apply_migrations(dsn)
    started = time.perf_counter()
    mapped = 0
    conn = await asyncpg.connect(dsn)
    try:
        await _init_connection(conn)
        for path in files:
            content = path.read_bytes()
            manifest = SnapshotManifest(
                school_id=path.stem,
                snapshot_id="direct",
                format=SnapshotFormat.LOCALSTORAGE_DUMP,
                taken_at="2024-06-01T00:00:00Z",
                size_bytes=len(content),
                sha256="0" * 64,
                chunk_count=1,
                chunk_sha256=["0" * 64],
            )  # type: ignore[arg-type]
            records = [
                out
                for item in plan_fanout(parse_snapshot(content, manifest.format), manifest)
                if isinstance(item.message, RawRecord) and isinstance(out := transform(item.message), MappedRecord)
            ]
            mapped += len(records)
            tables = rows_by_table(plan(newest_per_record(records), set()).ready)  # orphans would fail a foreign key
            async with conn.transaction():
                await conn.execute("SET LOCAL schoolmig.loading = 'on'")
                for spec in LOAD_ORDER:
                    await conn.copy_records_to_table(spec.name, records=tables.get(spec.name, []), columns=spec.column_names)
    finally:
        await conn.close()
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "rows": await count_target_rows(dsn), "source_records_mapped": mapped}


# --------------------------------------------------------------------------- 2. dlt


def dlt_python() -> Path | None:
    python = DLT_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(DLT_VENV)], check=True)
        installed = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", f"dlt[postgres]=={DLT_VERSION}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if installed.returncode != 0:
            print(f"dlt could not be installed: {installed.stderr[-500:]}", file=sys.stderr)
            return None
    return python


def dlt_run(folder: Path, dsn: str) -> dict[str, Any] | None:
    python = dlt_python()
    if python is None:
        return None
    done = subprocess.run(
        [str(python), str(ROOT / "tests/bench/dlt_load.py"), str(folder), dsn], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"dlt failed: {done.stderr[-2000:]}", file=sys.stderr)
        return None
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(result["seconds"], 2), "rows": result["rows"], "version": DLT_VERSION}


# --------------------------------------------------------------------------- 3. schoolmig


class Sampler(threading.Thread):
    """Peak RSS and last CPU times of a process tree, by role, every ``interval`` seconds."""

    def __init__(self, root: psutil.Process, extra: dict[str, int], interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.extra, self.interval = root, extra, interval
        self.peak_rss: dict[str, int] = {}
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (role, cpu seconds so far)
        self.roles: dict[int, str] = {}
        self.stop = threading.Event()
        self.base: dict[int, float] = {}  # CPU the servers spent before this run (the other two loads)
        for pid in extra.values():
            for p in (psutil.Process(pid), *psutil.Process(pid).children(recursive=True)):
                times = p.cpu_times()
                self.base[p.pid] = times.user + times.system

    @staticmethod
    def role(process: psutil.Process) -> str:
        """The service a process belongs to (a worker process counts for its parent's service)."""
        for each in (process, *process.parents()):
            for part in each.cmdline():
                if part.startswith("services."):
                    return part.removeprefix("services.")
        return "cli" if any("schoolmig" in part for part in process.cmdline()) else "other"

    def sample(self) -> None:
        processes: list[tuple[str, psutil.Process]] = [("cli", self.root)]
        try:
            processes += [(self.role(c), c) for c in self.root.children(recursive=True)]
        except psutil.Error:
            pass
        for name, pid in self.extra.items():
            try:
                root = psutil.Process(pid)
                processes += [(name, p) for p in (root, *root.children(recursive=True))]
            except psutil.Error:
                continue
        rss: dict[str, int] = {}
        for role, process in processes:
            role = self.roles.setdefault(process.pid, role)  # as first seen: an exiting process has no command line
            try:
                rss[f"{role}:{process.pid}"] = process.memory_info().rss
                times = process.cpu_times()
                self.cpu[process.pid] = (role, times.user + times.system - self.base.get(process.pid, 0.0))
            except psutil.Error:
                continue
        for key, value in rss.items():
            role = key.split(":")[0]
            self.peak_rss[role] = max(self.peak_rss.get(role, 0), value)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def cpu_by_role(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for role, seconds in self.cpu.values():
            totals[role] = totals.get(role, 0.0) + seconds
        return totals


async def schoolmig_run(
    files: list[Path], dsn: str, replicas: str, postgres_pid: int | None, tree: Path = ROOT
) -> dict[str, Any]:
    """``schoolmig run`` of the files; ``tree``: another checkout's code (a baseline), same venv."""
    kafka = EmbeddedKafka().start()
    state = Path(tempfile.mkdtemp(prefix="schoolmig-bench-state-"))
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "DATABASE_URL": dsn,
        "SCHOOLMIG_STATE_DIR": str(state),
        "SCHOOLMIG_BACKUP_DIR": str(state / "backups"),
        "PYTHONPATH": str(tree),
        "SCHOOLMIG_RUN_TIMEOUT_S": "7200",
    }  # a baseline's fixed give-up
    command = [sys.executable, "-m", "schoolmig.cli", "run", *map(str, files), "--report", str(state / "report.json")]
    if replicas:
        command += ["--replicas", replicas]
    extra = {"broker": kafka._process.pid} if kafka._process else {}  # noqa: SLF001 - the bench reads its own child
    if postgres_pid:
        extra["postgres"] = postgres_pid
    started = time.perf_counter()
    try:
        cli = subprocess.Popen(command, env=env, cwd=tree, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        sampler = Sampler(psutil.Process(cli.pid), extra)
        sampler.start()
        _, stderr = await asyncio.to_thread(cli.communicate)
        sampler.stop.set()
        sampler.join()
        wall = time.perf_counter() - started
    finally:
        kafka.stop()
    conn = await asyncpg.connect(dsn)
    try:
        window = await conn.fetchrow(
            """
            SELECT extract(epoch FROM (SELECT max(at) FROM migration.phase_transitions WHERE to_phase = 'validated')
                                    - (SELECT min(received_at) FROM migration.snapshots)) AS seconds,
                   (SELECT count(DISTINCT school_id) FROM migration.phase_transitions WHERE to_phase = 'validated') AS validated,
                   (SELECT count(*) FROM migration.loaded_records) AS loaded,
                   (SELECT count(*) FROM migration.quarantine) AS quarantined,
                   (SELECT max(extract(epoch FROM finished_at - requested_at)) FROM migration.validation_runs) AS slowest_validation_s,
                   (SELECT extract(epoch FROM max(finished_at) - min(requested_at)) FROM migration.validation_runs) AS validation_window_s,
                   (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relid = 'migration.parked_records'::regclass) AS parked
            """
        )
        stages = await conn.fetchrow(
            """
            WITH t0 AS (SELECT min(received_at) AS t FROM migration.snapshots)
            SELECT extract(epoch FROM (SELECT max(released_at) FROM migration.snapshots) - t0.t) AS last_released,
                   extract(epoch FROM (SELECT min(loaded_at) FROM migration.loaded_records) - t0.t) AS first_loaded,
                   extract(epoch FROM (SELECT max(loaded_at) FROM migration.loaded_records) - t0.t) AS last_loaded,
                   extract(epoch FROM (SELECT max(at) FROM migration.phase_transitions WHERE to_phase = 'synced') - t0.t) AS last_synced,
                   extract(epoch FROM (SELECT min(requested_at) FROM migration.validation_runs) - t0.t) AS first_validation,
                   extract(epoch FROM (SELECT max(at) FROM migration.phase_transitions WHERE to_phase = 'validated') - t0.t) AS last_validated
              FROM t0
            """
        )
    finally:
        await conn.close()
    cpu = sampler.cpu_by_role()
    source_records = int(window["loaded"]) + int(window["quarantined"])
    return {
        "exit_code": cli.returncode,
        "stderr_tail": stderr[-400:] if cli.returncode else "",
        "seconds": round(float(window["seconds"] or wall), 2),
        "wall_incl_startup_s": round(wall, 2),
        "schools_validated": int(window["validated"]),
        "records_loaded": int(window["loaded"]),
        "records_quarantined": int(window["quarantined"]),
        "rows": await count_target_rows(dsn),
        "records_parked_on_the_way": int(window["parked"] or 0),
        "replicas": replicas or "1 each",
        "cpu_s": {role: round(seconds, 1) for role, seconds in sorted(cpu.items())},
        "peak_rss_mb": {role: round(rss / 2**20) for role, rss in sorted(sampler.peak_rss.items())},
        "records_per_cpu_s": {role: round(source_records / seconds) for role, seconds in sorted(cpu.items()) if seconds > 0},
        "timeline_s": {k: round(float(v or 0), 2) for k, v in stages.items()},
        "slowest_validation_s": round(float(window["slowest_validation_s"] or 0), 2),
        "validation_window_s": round(float(window["validation_window_s"] or 0), 2),
    }


# --------------------------------------------------------------------------- main


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=int(os.environ.get("SCHOOLS", 100)))
    parser.add_argument("--replicas", default="", help="for schoolmig run, e.g. transform=2,loader=2")
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--skip-direct", action="store_true", help="only schoolmig (e.g. a scale run for linearity and memory)")
    parser.add_argument("--baseline", metavar="REV", help="also run schoolmig as of this git revision (before/after)")
    parser.add_argument("--out", type=Path, default=Path(".bench/e2e.json"))
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="schoolmig-bench-"))
    files = generate(folder / "files", args.schools)
    server = EmbeddedPostgres().start()  # what `make run` uses (fsync off), the same for all three
    try:
        direct = None if args.skip_direct else await direct_script(files, await create_database(server.dsn, "direct"))
        dlt = (
            None
            if args.skip_dlt
            else await asyncio.to_thread(dlt_run, folder / "files", await create_database(server.dsn, "dlt"))
        )
        postgres_pid = server._process.pid if server._process else None  # noqa: SLF001
        ours = await schoolmig_run(files, await create_database(server.dsn, "schoolmig"), args.replicas, postgres_pid)
        before = None
        if args.baseline:
            tree = ROOT / ".bench" / f"baseline-{args.baseline}"
            if not tree.exists():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline], check=True)
            before = await schoolmig_run(files, await create_database(server.dsn, "baseline"), "", postgres_pid, tree)
    finally:
        server.cleanup()
    rows = ours["rows"]
    result: dict[str, Any] = {
        "schools": args.schools,
        "source_records": ours["records_loaded"] + ours["records_quarantined"],
        "target_rows": rows,
        "direct_script": direct and {**direct, "rows_per_s": round(direct["rows"] / direct["seconds"])},
        "dlt": dlt and {**dlt, "rows_per_s": round(dlt["rows"] / dlt["seconds"])},
        "schoolmig": {**ours, "rows_per_s": round(rows / ours["seconds"])},
        "baseline": before and {**before, "revision": args.baseline, "rows_per_s": round(rows / before["seconds"])},
        "schoolmig_vs_baseline": before and round(before["seconds"] / ours["seconds"], 3),
        "schoolmig_vs_direct": direct and round(direct["seconds"] / ours["seconds"], 3),
        "schoolmig_vs_dlt": dlt and round(dlt["seconds"] / ours["seconds"], 3),
        "targets": {"schoolmig_vs_direct": ">= 0.5", "schoolmig_vs_dlt": ">= 2", "peak_rss_mb": "< 250 per service and CLI"},
    }
    write_figures(args.out, result)
    print_table(result)


def print_table(r: dict[str, Any]) -> None:
    print(f"\n{r['schools']} schools, {r['source_records']:,} source records, {r['target_rows']:,} target rows")
    print(f"{'':<16}{'seconds':>10}{'rows/s':>12}")
    for name in ("direct_script", "dlt", "baseline", "schoolmig"):
        if r[name]:
            print(f"{name:<16}{r[name]['seconds']:>10}{r[name]['rows_per_s']:>12,}")
    print(
        f"schoolmig / direct = {r['schoolmig_vs_direct']}x   schoolmig / dlt = {r['schoolmig_vs_dlt']}x"
        f"   schoolmig / baseline = {r['schoolmig_vs_baseline']}x"
    )
    for name in ("baseline", "schoolmig"):
        if not (run := r[name]):
            continue
        print(f"{name}: {'service':<14}{'cpu s':>8}{'peak MB':>9}{'rec/cpu-s':>11}")
        for role in sorted(run["peak_rss_mb"]):
            print(
                f"{'':<{len(name) + 2}}{role:<14}{run['cpu_s'].get(role, 0):>8}{run['peak_rss_mb'][role]:>9}"
                f"{run['records_per_cpu_s'].get(role, 0):>11,}"
            )


if __name__ == "__main__":
    asyncio.run(main())
