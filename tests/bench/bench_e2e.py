"""Benchmark: the whole migration against the simplest alternatives, in one invocation.

The same generated school files (the spec's volumes, messy as real data), the same
embedded PostgreSQL, one after another:

0. **plainest script**: one process, parse, flatten each record to its rows, COPY into
   tables that have the columns and a primary key only: the database's cost without the
   product's schema (the issue's yardstick);
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
            records = _mapped_records(path)
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


async def plainest_script(files: list[Path], dsn: str) -> dict[str, Any]:
    """The plainest thing a user could write, and the issue's yardstick: one process; per school,
    parse the file, flatten each record to rows the generic way (scalars to text columns,
    nested objects to ``a__b`` columns, lists of objects to child rows), COPY into tables
    that have those columns and a primary key, nothing else (no mapping, foreign keys, checks,
    unique keys, triggers, ledger): the database's cost without the product's schema.
    Tables and columns are made as they are first seen; a repeated id keeps its last record."""
    conn = await asyncpg.connect(dsn)
    columns: dict[str, list[str]] = {}  # table -> its columns, in order
    try:
        started = time.perf_counter()
        records = 0
        for path in files:
            tables: dict[str, dict[tuple[str, ...], dict[str, str]]] = {}
            document = json.loads(path.read_bytes())
            for key, value in document.items():
                items = json.loads(value) if isinstance(value, str) and value[:1] == "[" else None
                if not isinstance(items, list):
                    continue
                for index, item in enumerate(items):
                    if isinstance(item, dict):
                        records += 1
                        _flatten(tables, _table_name(key), (path.stem, str(item.get("id", index))), item)
            async with conn.transaction():
                for table, rows in tables.items():
                    await _ensure_table(conn, columns, table, rows)
                    names = columns[table]
                    await conn.copy_records_to_table(
                        table, records=[tuple(row.get(c) for c in names) for row in rows.values()], columns=names
                    )
        seconds = time.perf_counter() - started
        rows = sum([await conn.fetchval(f"SELECT count(*) FROM {table}") for table in columns])
    finally:
        await conn.close()
    return {"seconds": round(seconds, 2), "rows": rows, "source_records": records, "tables": len(columns)}


def _identifier(prefix: str, name: str, length: int) -> str:
    """A table or column name made of ``[a-z0-9_]`` (quoted where used)."""
    return prefix + "".join(c if c.isalnum() else "_" for c in name.lower())[:length]


def _table_name(key: str) -> str:
    return _identifier("p_", key, 40)


def _flatten(tables: dict[str, dict[tuple[str, ...], dict[str, str]]], table: str, key: tuple[str, ...], item: dict) -> None:
    """One record to one row of ``table`` (its scalars and nested objects) and child rows (its
    lists of objects, in ``<table>__<field>``), keyed by ``key`` (+ the child's position)."""
    row: dict[str, str] = {"k": "/".join(key)}

    def put(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for name, inner in value.items():
                put(f"{prefix}__{name}" if prefix else str(name), inner)
        elif isinstance(value, list):
            if value and all(isinstance(v, dict) for v in value):
                for n, child in enumerate(value):
                    _flatten(tables, f"{table}__{_identifier('', prefix, 40)}"[:60], (*key, str(n)), child)
            else:
                row[_column(prefix)] = json.dumps(value, ensure_ascii=False)
        elif value is not None:
            row[_column(prefix)] = str(value)

    put("", item)
    tables.setdefault(table, {})[key] = row  # a repeated id: its last record


def _column(name: str) -> str:
    return _identifier("c_", name, 50)


async def _ensure_table(
    conn: asyncpg.Connection, columns: dict[str, list[str]], table: str, rows: dict[tuple[str, ...], dict[str, str]]
) -> None:
    """The table and every column these rows have (names made of [a-z0-9_] above, quoted)."""
    if table not in columns:
        await conn.execute(f'CREATE TABLE "{table}" (k text PRIMARY KEY)')
        columns[table] = ["k"]
    known = set(columns[table])
    for name in dict.fromkeys(c for row in rows.values() for c in row):
        if name not in known:
            await conn.execute(f'ALTER TABLE "{table}" ADD COLUMN "{name}" text')
            columns[table].append(name)
            known.add(name)


def _mapped_records(path: Path) -> list[MappedRecord]:
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
    return [
        out
        for item in plan_fanout(parse_snapshot(content, manifest.format), manifest)
        if isinstance(item.message, RawRecord) and isinstance(out := transform(item.message), MappedRecord)
    ]


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
    await _reset_statements(dsn)
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
        statements = await _top_statements(conn)
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
        "postgres_cpu_us_per_record": round(cpu.get("postgres", 0.0) / max(source_records, 1) * 1e6, 1),
        "statements": statements,
    }


async def _reset_statements(dsn: str) -> None:
    """pg_stat_statements from zero for this run (the server preloads it: ``main``)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def _top_statements(conn: asyncpg.Connection, limit: int = 25) -> list[dict[str, Any]]:
    """What PostgreSQL spent its time on in this run's database, by statement (parameterised
    text: no values), most first: the price of each piece of bookkeeping."""
    rows = await conn.fetch(
        """
        SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query, calls, rows,
               round(total_exec_time::numeric, 1) AS total_ms,
               round((100 * total_exec_time / nullif(sum(total_exec_time) OVER (), 0))::numeric, 1) AS share
          FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC
         LIMIT $1
        """,
        limit,
    )
    return [{k: (float(v) if k in ("total_ms", "share") and v is not None else v) for k, v in r.items()} for r in rows]


# --------------------------------------------------------------------------- main


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=int(os.environ.get("SCHOOLS", 100)))
    parser.add_argument("--replicas", default="", help="for schoolmig run, e.g. transform=2,loader=2")
    parser.add_argument("--skip-dlt", action="store_true")
    parser.add_argument("--skip-direct", action="store_true", help="only schoolmig (e.g. a scale run for linearity and memory)")
    parser.add_argument("--baseline", metavar="REV", help="also run schoolmig as of this git revision (before/after)")
    parser.add_argument("--out", type=Path, default=Path(".bench/e2e.json"))
    parser.add_argument(
        "--linearity-from", type=int, default=100, metavar="N", help="also run the first N schools: time(all) / time(N)"
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="schoolmig-bench-"))
    files = generate(folder / "files", args.schools)
    # what `make run` uses (fsync off), the same for all; pg_stat_statements prices each statement
    server = EmbeddedPostgres(options=("shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track=all")).start()
    try:
        plainest = None if args.skip_direct else await plainest_script(files, await create_database(server.dsn, "plainest"))
        direct = None if args.skip_direct else await direct_script(files, await create_database(server.dsn, "direct"))
        dlt = (
            None
            if args.skip_dlt
            else await asyncio.to_thread(dlt_run, folder / "files", await create_database(server.dsn, "dlt"))
        )
        postgres_pid = server._process.pid if server._process else None  # noqa: SLF001
        ours = await schoolmig_run(files, await create_database(server.dsn, "schoolmig"), args.replicas, postgres_pid)
        smaller = None
        if args.linearity_from and args.linearity_from < args.schools:  # the same run's smaller case, back to back
            smaller = await schoolmig_run(
                files[: args.linearity_from], await create_database(server.dsn, "smaller"), args.replicas, postgres_pid
            )
        before = None
        if args.baseline:
            tree = ROOT / ".bench" / f"baseline-{args.baseline}"
            if not tree.exists():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.baseline], check=True)
            before = await schoolmig_run(files, await create_database(server.dsn, "baseline"), "", postgres_pid, tree)
    finally:
        server.cleanup()
    rows = ours["rows"]
    waited = ours["wall_incl_startup_s"]  # as a user waits: the command's start to its end
    result: dict[str, Any] = {
        "schools": args.schools,
        "source_records": ours["records_loaded"] + ours["records_quarantined"],
        "target_rows": rows,
        "plainest_script": plainest and {**plainest, "rows_per_s": round(plainest["rows"] / plainest["seconds"])},
        "direct_script": direct and {**direct, "rows_per_s": round(direct["rows"] / direct["seconds"])},
        "dlt": dlt and {**dlt, "rows_per_s": round(dlt["rows"] / dlt["seconds"])},
        "schoolmig": {**ours, "rows_per_s": round(rows / ours["seconds"])},
        "baseline": before and {**before, "revision": args.baseline, "rows_per_s": round(rows / before["seconds"])},
        "schoolmig_vs_baseline": before and round(before["seconds"] / ours["seconds"], 3),
        "schoolmig_vs_direct": direct and round(direct["seconds"] / ours["seconds"], 3),
        "schoolmig_vs_dlt": dlt and round(dlt["seconds"] / ours["seconds"], 3),
        # The targets: times as a user waits (start-up included), in this one run.
        "waited_vs_plainest": plainest and round(plainest["seconds"] / waited, 3),
        "waited_vs_dlt": dlt and round(dlt["seconds"] / waited, 3),
        "smaller": smaller and {**smaller, "schools": args.linearity_from},
        "linearity": smaller and round(waited / smaller["wall_incl_startup_s"], 2),
        "postgres_cpu_vs_baseline": before
        and round(ours["postgres_cpu_us_per_record"] / max(before["postgres_cpu_us_per_record"], 1e-9), 3),
        "peak_rss_over_250mb": sorted(
            role for role, mb in ours["peak_rss_mb"].items() if mb >= 250 and role not in ("postgres", "broker")
        ),
        "targets": {
            "waited_vs_plainest": ">= 0.25",
            "waited_vs_dlt": ">= 1",
            "linearity": smaller
            and f"<= {args.schools / args.linearity_from:g} (time of {args.schools} / of {args.linearity_from})",
            "peak_rss_mb": "< 250 per service and the CLI; the broker's stated",
            "postgres_cpu_vs_baseline": "<= 0.333 (PostgreSQL CPU per source record)",
        },
    }
    write_figures(args.out, result)
    print_table(result)


def print_table(r: dict[str, Any]) -> None:
    print(f"\n{r['schools']} schools, {r['source_records']:,} source records, {r['target_rows']:,} target rows")
    print(f"{'':<16}{'seconds':>10}{'rows/s':>12}")
    for name in ("plainest_script", "direct_script", "dlt", "baseline", "schoolmig"):
        if r[name]:
            print(f"{name:<16}{r[name]['seconds']:>10}{r[name]['rows_per_s']:>12,}")
    print(
        f"as a user waits (start-up included): schoolmig {r['schoolmig']['wall_incl_startup_s']} s;"
        f" plainest / schoolmig = {r['waited_vs_plainest']}x   dlt / schoolmig = {r['waited_vs_dlt']}x"
        f"   linearity = {r['linearity']}   PostgreSQL CPU per record vs baseline = {r['postgres_cpu_vs_baseline']}x"
    )
    print("PostgreSQL's time by statement (schoolmig):")
    for each in r["schoolmig"]["statements"][:12]:
        print(f"  {each['share']:>5}% {each['calls']:>8} calls  {each['query'][:110]}")
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
