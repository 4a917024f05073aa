"""The ``schoolmig`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from shared.catalog.timezones import UnknownZone, check_zone
from shared.platform.settings import Settings
from shared.wire.messages import UNNAMED_DEVICE

if TYPE_CHECKING:
    import asyncpg

    from schoolmig.runner import Job
    from shared.wire.messages import OperatorCommand

console = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


# --------------------------------------------------------------------------- up


async def _up(settings: Settings, replicas: dict[str, int]) -> int:
    from schoolmig.stack import Stack, StackInfo

    stack = await Stack(settings, metrics_ports=True, replicas=replicas).start()
    info = StackInfo.of(stack, os.getpid())
    info.save(settings.state_dir)
    targets = settings.state_dir / "prometheus-targets.json"  # for a Prometheus' file_sd_configs
    targets.write_text(json.dumps(info.prometheus_targets(), indent=2))
    console.print("stack up (Ctrl-C stops); `schoolmig status` shows this again:")
    for line in info.lines():
        print(f"  {line}", flush=True)
    print(f"  prometheus   file_sd targets in {targets}", flush=True)
    if settings.operator_keys is None and settings.operator_key is None and stack.settings.operator_key is not None:
        # Made up for this stack (never written to disk): commands from another terminal need it.
        console.print(
            "operator commands (cutover, rollback, override-audit) from another terminal need this stack's key:", soft_wrap=True
        )
        print(
            f"  export SCHOOLMIG_OPERATOR={stack.settings.operator} "  # one line, as it must be pasted
            f"SCHOOLMIG_OPERATOR_KEY={stack.settings.operator_key.get_secret_value()}",
            flush=True,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    console.print("stopping: services finish their in-flight batches…")
    await stack.stop()
    for path in (StackInfo.path(settings.state_dir), targets):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return 0


# --------------------------------------------------------------------------- run


async def _run(
    settings: Settings,
    rounds: list[list[Job]],
    report_path: Path | None,
    override_audit: str | None = None,
    replicas: dict[str, int] | None = None,
    cutover: bool = False,
) -> int:
    from schoolmig.render import print_report
    from schoolmig.runner import cut_over, run_jobs
    from schoolmig.stack import Stack, StackInfo
    from shared.ledger.accounting import progress

    running = StackInfo.load_running(settings.state_dir)
    stack: Stack | None = None
    if running:  # the stack file has no password: DATABASE_URL from here, if set, has it
        bootstrap, dsn = running.kafka_bootstrap_servers, settings.database_url or running.database_url
        console.print(f"using the running stack (pid {running.pid})")
    else:
        log_dir = settings.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        logs = {}

        def to_files(service: str, line: str) -> None:
            handle = logs.get(service) or logs.setdefault(service, open(log_dir / f"{service}.log", "a"))
            handle.write(line + "\n")
            handle.flush()

        with console.status("starting the stack…"):
            stack = await Stack(settings, sink=to_files, replicas=replicas or {}).start()
        bootstrap, dsn = stack.bootstrap_servers, stack.database_url
        console.print(f"stack started (service logs in {log_dir}/)")
    try:
        with console.status("migrating…") as status:
            lines: dict[str, str] = {}

            def show(school_id: str, counts: dict[Any, Any], phase: str | None) -> None:
                done, source = progress(counts)
                lines[school_id] = f"{school_id} {phase or 'waiting'} {done}/{source}"
                status.update(" · ".join(lines.values()))

            def said(message: str) -> None:
                if message.startswith("published "):  # where its read time and device came from: kept on screen
                    console.print(message, soft_wrap=True)
                status.update(message)

            report = await run_jobs(
                stack.settings if stack else settings,
                bootstrap,
                dsn,
                rounds,
                on_status=said,
                on_progress=show,
                override_audit=override_audit,
            )
            if cutover:
                status.update("cutting the validated schools over…")
                report = await cut_over(
                    stack.settings if stack else settings,
                    bootstrap,
                    dsn,
                    report,
                    actor=settings.operator,
                    on_status=lambda m: status.update(m),
                )
    finally:
        if stack:
            with console.status("stopping the stack…"):
                await stack.stop()
    print_report(report, Console())
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
        console.print(f"report written to {report_path}")
    return 0 if report["ok"] else 1


async def _migrate(settings: Settings, job: Job, cutover: bool, override_audit: str | None, as_json: bool) -> int:
    """One school through every phase against a running stack, with a progress bar per
    domain; the same path as ``run`` (publish, follow, report), then the cutover if asked."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from schoolmig.render import print_report
    from schoolmig.runner import run_jobs
    from shared.catalog.domains import ALL_DOMAINS

    school = job.school_id

    if not (bootstrap := _endpoint(settings, "kafka")) or not (dsn := _endpoint(settings, "database")):
        return 2
    columns = (TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[phase]}"))
    with Progress(*columns, console=console, transient=as_json) as bars:
        tasks = {d: bars.add_task(d.value, total=None, phase="") for d in ALL_DOMAINS}

        def show(_: str, counts: dict[Any, Any], phase: str | None) -> None:
            for domain, task in tasks.items():
                c = counts.get(domain)
                if c is not None:
                    bars.update(task, total=c.source, completed=c.loaded + c.quarantined, phase=phase or "")

        report = await run_jobs(
            settings,
            bootstrap,
            dsn,
            [[job]],
            on_progress=show,
            on_status=lambda m: (
                console.print(m, soft_wrap=True) if m.startswith("published ") else None
            ),  # stderr: --json keeps stdout
            override_audit=override_audit,
        )
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print_report(report, Console())
    if not report["ok"]:
        return 1
    if cutover:
        return await _operate(
            settings, "cutover", school, os.environ.get("USER", "operator"), "schoolmig migrate --cutover", True, False
        )  # the trail goes to stderr
    return 0


# --------------------------------------------------------------------------- publish, demo


def _endpoint(settings: Settings, which: str) -> str | None:
    """KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL from the environment, else a running `up` stack's."""
    from schoolmig.stack import StackInfo

    configured = settings.kafka_bootstrap_servers if which == "kafka" else settings.database_url
    if configured:
        return configured
    running = StackInfo.load_running(settings.state_dir)
    if running:
        return running.kafka_bootstrap_servers if which == "kafka" else running.database_url
    console.print(
        f"[red]no {'broker' if which == 'kafka' else 'database'}: set "
        f"{'KAFKA_BOOTSTRAP_SERVERS' if which == 'kafka' else 'DATABASE_URL'} or start `schoolmig up`[/]"
    )
    return None


async def _publish(settings: Settings, job: Job, snapshot_id: str | None = None) -> int:
    from rich.progress import Progress

    from schoolmig.sdk import publish_snapshot

    if not (bootstrap := _endpoint(settings, "kafka")):
        return 2
    taken_at, source = job.read_time()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"publishing {job.path.name}", total=None)
        manifest = await publish_snapshot(
            bootstrap,
            settings.resolved_ingest_topic,
            job.school_id,
            job.path,
            snapshot_id=snapshot_id,
            taken_at=taken_at,
            device_id=job.device_id,
            timezone=job.timezone,
            on_progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    out = {"school_id": job.school_id, "snapshot_id": manifest.snapshot_id, "chunks": manifest.chunk_count}
    print(json.dumps(out | {"taken_at": manifest.taken_at.isoformat(), "taken_at_from": source, "device_id": job.device_id}))
    return 0


async def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    from shared.platform.db import create_pool

    if not (dsn := _endpoint(settings, "database")):
        return 2
    pool = await create_pool(dsn)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def _audit(settings: Settings, school: str, snapshot: str | None, as_json: bool) -> int:
    from schoolmig.admin import latest_audit
    from schoolmig.render import print_audit

    async def work(pool: asyncpg.Pool) -> int:
        audit = await latest_audit(pool, school, snapshot)
        if audit is None:
            console.print(f"[red]no audit for school {school}[/]")
            return 1
        if as_json:
            print(json.dumps(audit, indent=2, ensure_ascii=False, default=str))
        else:
            print_audit(school, audit, Console())
        return 0

    return await _with_pool(settings, work)


async def _backup(settings: Settings, action: str, school: str | None, snapshot: str | None, out: Path | None) -> int:
    from schoolmig.admin import export_backup, verify_backups
    from schoolmig.render import print_backup_checks

    async def work(pool: asyncpg.Pool) -> int:
        if action == "verify":
            checks = await verify_backups(pool, school)
            print_backup_checks(checks, Console())
            return 0 if checks and all(c.ok for c in checks) else 1
        assert school and out
        try:
            snapshot_id, size = await export_backup(pool, school, snapshot, out)
        except (LookupError, ValueError) as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        console.print(f"wrote {size} bytes of {school}/{snapshot_id} to {out}")
        return 0

    return await _with_pool(settings, work)


async def _export(settings: Settings, school: str, fmt: str, out: Path | None, verify: bool, as_json: bool) -> int:
    """A school's live records rebuilt from the tables as a file its app can load; with
    ``--verify``, re-ingested into a scratch school and compared (``schoolmig.exporting``)."""
    from datetime import UTC, datetime

    from schoolmig.exporting import export_school
    from shared.wire.messages import SnapshotFormat

    if verify and not _endpoint(settings, "kafka"):
        return 2
    target = out or settings.state_dir / "exports" / f"{school}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"

    async def work(pool: asyncpg.Pool) -> int:
        try:
            result = await export_school(
                pool, settings, school, SnapshotFormat(fmt), target, actor=settings.operator or "operator", verify=verify
            )
        except LookupError as exc:
            console.print(f"[red]{exc}[/]")
            return 1
        if as_json:
            print(json.dumps({**result.__dict__, "path": str(result.path), "verified": result.verified}, indent=2))
        else:
            console.print(
                f"wrote {result.size_bytes} bytes to {result.path} (export {result.export_id}, sha256 {result.sha256[:12]})"
            )
            console.print("records: " + ", ".join(f"{d} {n}" for d, n in result.records.items()))
            if result.left_out:
                console.print(
                    "[yellow]not carried by this format: " + ", ".join(f"{d} {n}" for d, n in result.left_out.items()) + "[/]"
                )
            if verify:
                if result.verified:
                    console.print(f"[green]verified: re-ingested as {result.verified_with}, every record equal[/]")
                else:
                    console.print(f"[red]NOT verified ({result.verified_with}):[/] " + "; ".join(result.differences[:10]))
        return 0 if result.verified or not verify else 1

    return await _with_pool(settings, work)


async def _validate(settings: Settings, school: str | None, snapshot: str | None, as_json: bool) -> int:
    """One school (``--school``), or every school's latest released snapshot (``--all``): the
    validator service compares each (asked through the coordinator, signed), and the results
    it stores are shown as they come."""
    import time

    from schoolmig.admin import latest_released_snapshots
    from schoolmig.render import print_validation, print_validation_summary
    from schoolmig.runner import send_command
    from shared.ledger.schools import command_outcome, validation
    from shared.wire.messages import OperatorCommand, operator_run_id

    if not (bootstrap := _endpoint(settings, "kafka")):
        return 2

    async def work(pool: asyncpg.Pool) -> int:
        latest = await latest_released_snapshots(pool, school)
        targets = [(school, snapshot)] if school and snapshot else list(latest.items())
        if not targets:
            console.print(f"[red]no released snapshot{f' for school {school}' if school else ''}[/]")
            return 1
        asked = [
            OperatorCommand(action="validate", school_id=s, snapshot_id=n, actor="cli", reason="schoolmig validate")
            for s, n in targets
        ]
        await send_command(bootstrap, settings, *asked)
        results: dict[str, Any] = {}
        deadline = time.monotonic() + settings.validation_timeout_s  # from the last result: --all takes its time
        while len(results) < len(asked) and time.monotonic() < deadline:
            for command in (c for c in asked if c.command_id not in results):
                if (outcome := await command_outcome(pool, command.command_id)) and outcome.startswith("refused"):
                    console.print(f"[red]{command.school_id}: {outcome}[/]")
                    return 1
                if (found := await validation(pool, operator_run_id(command.command_id))) is not None:
                    results[command.command_id] = found
                    deadline = time.monotonic() + settings.validation_timeout_s
            await asyncio.sleep(0.5)
        if len(results) < len(asked):
            console.print(
                f"[red]no result from the validator in {settings.validation_timeout_s:.0f}s: is the stack up, and does the "
                "coordinator know SCHOOLMIG_OPERATOR's key? (a command it refuses unheard is in schoolmig.deadletter)[/]"
            )
            return 1
        done = [results[c.command_id] for c in asked]
        if as_json:
            print(
                json.dumps(
                    [r.model_dump(mode="json") for r in done] if school is None else done[0].model_dump(mode="json"),
                    indent=2,
                    ensure_ascii=False,
                )
            )
        elif school is None:
            print_validation_summary([r.model_dump(mode="json") for r in done], Console())
        else:
            print_validation(done[0].model_dump(mode="json"), Console())
        return 0 if all(r.ok for r in done) else 1

    return await _with_pool(settings, work)


async def _status(settings: Settings, as_json: bool) -> int:
    from schoolmig.render import print_status
    from schoolmig.stack import StackInfo
    from shared.ledger.accounting import progress, record_counts
    from shared.ledger.device_store import device_snapshots, device_states
    from shared.ledger.devices import conflicts
    from shared.ledger.quarantine import data_conflicts
    from shared.ledger.schools import schools as all_schools

    running = StackInfo.load_running(settings.state_dir)

    async def work(pool: asyncpg.Pool) -> int:
        schools = await all_schools(pool)
        for school in schools:
            counts = await record_counts(pool, school["school_id"], school["snapshot_id"]) if school["snapshot_id"] else None
            school["accounted"], school["source"] = progress(counts)
            states = await device_states(pool, school["school_id"])
            school["devices"] = sorted(states)  # the browsers its snapshots came from ('' the unnamed one)
            school["device_conflicts"] = len(conflicts(states))  # records they disagree on (the report lists them)
            newest = await device_snapshots(pool, school["school_id"])
            held = await data_conflicts(pool, school["school_id"], [*newest, *filter(None, [school["snapshot_id"]])])
            school["data_conflicts"] = [  # writes held in quarantine for a conflict of the data: they block validation
                {
                    "record": f"{c['domain']}/{c['legacy_id']}",
                    "reason": c["reason"],
                    "message": c["message"],
                    "accepted_by": c["actor"],
                }
                for c in held
            ]
        if as_json:
            print(json.dumps(schools, indent=2, default=str))  # the schools only, as ever (stack.json has the rest)
        else:
            if running:
                console.print(f"stack (pid {running.pid}):")
                for line in running.lines():
                    print(f"  {line}")
            print_status(schools, Console())
        return 0

    return await _with_pool(settings, work)


async def _operate(settings: Settings, action: str, school: str, actor: str, reason: str, wait: bool, as_json: bool) -> int:
    """Ask the coordinator (over its command topic) to cut a school over or roll it back,
    then follow the phase until the cutover ends (``--no-wait``: just ask)."""
    import time

    from schoolmig.runner import send_command
    from shared.ledger.schools import phase_of, transitions
    from shared.wire.messages import OperatorCommand

    if not (bootstrap := _endpoint(settings, "kafka")):
        return 2
    command = OperatorCommand(action=action, school_id=school, actor=actor, reason=reason)  # type: ignore[arg-type]

    async def work(pool: asyncpg.Pool) -> int:
        phase, _ = await phase_of(pool, school)
        if action == "cutover" and phase != "validated":
            console.print(f"[red]refused: {school} is {phase or 'unknown'}; cutover needs validated[/]")
            return 1
        before = len(await transitions(pool, school))
        await send_command(bootstrap, settings, command)
        if not wait:
            return 0
        deadline = time.monotonic() + settings.run_stall_timeout_s
        ended = {"completed", "rolled_back"}
        while time.monotonic() < deadline:
            moves = (await transitions(pool, school))[before:]
            if moves and moves[-1]["to_phase"] in ended or (action == "rollback" and moves):
                break
            await asyncio.sleep(0.5)
        moves = (await transitions(pool, school))[before:]
        if as_json:
            print(json.dumps(moves, indent=2, default=str))
        else:
            for m in moves:
                console.print(f"{m['at']:%H:%M:%S} {m['from_phase']} → [bold]{m['to_phase']}[/] by {m['actor']}: {m['reason']}")
            if not moves:
                console.print("[yellow]the coordinator did not move the school (see its log: refused?)[/]")
        return 0 if moves and moves[-1]["to_phase"] == ("completed" if action == "cutover" else "rolled_back") else 1

    return await _with_pool(settings, work)


async def _answered(settings: Settings, command: OperatorCommand, sent: str, wait_s: float = 30.0) -> int:
    """Send ``command``, then show the coordinator's answer when the database is reachable
    (exit 1 when it refused); otherwise, or if no answer came within ``wait_s``, ``sent``."""
    import time

    from schoolmig.runner import send_command
    from shared.ledger.schools import command_outcome
    from shared.platform.db import create_pool

    if not (bootstrap := _endpoint(settings, "kafka")):
        return 2
    await send_command(bootstrap, settings, command)
    from schoolmig.stack import StackInfo

    running = StackInfo.load_running(settings.state_dir)
    dsn = settings.database_url or (running.database_url if running else None)
    outcome = None
    if dsn:
        pool = await create_pool(dsn)
        try:
            deadline = time.monotonic() + wait_s
            while (outcome := await command_outcome(pool, command.command_id)) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
        finally:
            await pool.close()
    if outcome is None:
        console.print(sent + " (no answer yet: see `schoolmig status` and the coordinator's log)", soft_wrap=True)
        return 0
    console.print(f"{command.school_id}: {outcome}", soft_wrap=True)
    return 1 if outcome.startswith("refused") else 0


async def _override(settings: Settings, school: str, snapshot: str | None, actor: str, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="override_audit", school_id=school, snapshot_id=snapshot, actor=actor, reason=reason)
    return await _answered(
        settings,
        command,
        f"override sent for {school}{f'/{snapshot}' if snapshot else ''}: the coordinator records it and lets the snapshot go on",
    )


async def _map_key(settings: Settings, school: str, snapshot: str | None, mapping: list[str], reason: str) -> int:
    from pydantic import ValidationError

    from shared.wire.messages import OperatorCommand

    aliases: dict[str, str] = {}
    for pair in mapping:
        key, sep, domain = pair.partition("=")
        if not sep or not key.strip() or not domain.strip():
            console.print(f"[red]{pair!r} is not KEY=DOMAIN (e.g. attendanceRecords=attendance)[/]")
            return 2
        aliases[key.strip()] = domain.strip()
    try:
        command = OperatorCommand(
            action="map_key", school_id=school, snapshot_id=snapshot, actor=settings.operator, reason=reason, key_aliases=aliases
        )
    except ValidationError as exc:
        from shared.catalog.domains import Domain

        console.print(f"[red]refused: {exc.errors()[0]['msg']} (domains: {', '.join(d.value for d in Domain)})[/]")
        return 2
    return await _answered(
        settings,
        command,
        f"mapping sent for {school}{f'/{snapshot}' if snapshot else ''}: the coordinator has the snapshot waiting at the "
        "audit gate audited and released again with it (`schoolmig audit` shows the mapping)",
    )


async def _redrive(settings: Settings, school: str, snapshot: str | None, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="redrive", school_id=school, snapshot_id=snapshot, actor=settings.operator, reason=reason)
    return await _answered(
        settings, command, f"re-drive of {school} sent: ingest fans its snapshot out again from the verified backup"
    )


async def _accept_conflicts(settings: Settings, school: str, records: list[str], reason: str) -> int:
    from pydantic import ValidationError

    from shared.wire.messages import OperatorCommand

    try:
        command = OperatorCommand(
            action="accept_conflict", school_id=school, records=records, actor=settings.operator, reason=reason
        )
    except ValidationError as exc:
        console.print(f"[red]refused: {exc.errors()[0]['msg']} (name each as DOMAIN/ID, e.g. students/student-10)[/]")
        return 2
    return await _answered(settings, command, f"acceptance sent for {school}: it is validated again")


async def _replay(settings: Settings, school: str, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="replay", school_id=school, actor=settings.operator, reason=reason)
    return await _answered(settings, command, f"replay of {school} sent: held writes are tried again, then it is validated")


async def _set_timezone(settings: Settings, school: str, zone: str, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="set_timezone", school_id=school, timezone=zone, actor=settings.operator, reason=reason)
    return await _answered(settings, command, f"time zone {zone} sent for {school}")


async def _topics(settings: Settings, create: bool, as_json: bool) -> int:
    """The pipeline's topics as they are on the broker (and created first with ``--create``:
    what is missing, with ``SCHOOLMIG_PARTITIONS`` partitions; existing ones are left as they
    are, since Kafka can only add partitions, which would move keys between them)."""
    from shared.platform.kafka import describe_topics, ensure_topics

    if not (bootstrap := _endpoint(settings, "kafka")):
        return 2
    settings = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    created = await ensure_topics(settings) if create else []
    described = await describe_topics(settings)
    if as_json:
        print(json.dumps({"created": created, "topics": described}, indent=2))
    else:
        for t in described:
            state = "created" if t["topic"] in created else ("ok" if t["exists"] else "MISSING")
            note = (
                ""
                if not t["exists"] or t["partitions"] == settings.partitions
                else f"  (SCHOOLMIG_PARTITIONS is {settings.partitions})"
            )
            console.print(
                f"{t['topic']:<40} {state:<8} {t['partitions']:>3} partition(s){'  compacted' if t['compacted'] else ''}{note}"
            )
    return 0 if all(t["exists"] for t in described) else 1


def _demo(out: Path, schools: int, seed: int) -> int:
    from schoolmig.demo import write_demo

    for path in write_demo(out, schools=schools, seed=seed):
        console.print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------- main


def _instant(text: str) -> datetime:
    """An ISO-8601 instant with its offset (a read time with no zone would be a guess)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no offset: give one, e.g. {text}+01:00 or {text}Z")
    return moment


def _zone(text: str) -> str:
    try:
        return check_zone(text)
    except UnknownZone as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _device(text: str) -> str:
    """A device id (empty: the unnamed device; argparse passes the default through here too)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{0,40}", text):
        raise argparse.ArgumentTypeError("a device id is 1-40 letters, digits, '_' or '-'")
    return text


def _replicas(text: str) -> dict[str, int]:
    from schoolmig.stack import parse_replicas

    try:
        replicas = parse_replicas(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return replicas


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="schoolmig", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start (embedded infra if needed and) the five services; Ctrl-C stops")
    run = commands.add_parser("run", help="bring a stack up if none runs, migrate the files, report, stop")
    for command in (up, run):
        command.add_argument(
            "--replicas",
            type=_replicas,
            default={},
            metavar="SERVICE=N,…",
            help="OS processes per service, e.g. transform=3,loader=2 (default 1 each)",
        )
    run.add_argument("files", nargs="+", type=Path, metavar="FILE")
    run.add_argument("--school", help="school id for every file (default: each file's name)")
    run.add_argument("--report", type=Path, help="write the report as JSON here")
    run.add_argument(
        "--override-audit", metavar="REASON", help="let these snapshots past critical audit findings, for this written reason"
    )
    run.add_argument("--cutover", action="store_true", help="then cut every validated school over to the API, and wait for each")
    migrate = commands.add_parser("migrate", help="one school through every phase on a running stack, with progress bars")
    migrate.add_argument("file", type=Path, metavar="FILE")
    migrate.add_argument("--school", required=True)
    publish = commands.add_parser("publish", help="publish one file to the ingest topic")
    publish.add_argument("file", type=Path)
    publish.add_argument("--school", required=True)
    publish.add_argument("--snapshot-id", help="publish an interrupted upload again (released once); default: its own id")
    for command in (run, migrate, publish):
        command.add_argument(
            "--taken-at",
            type=_instant,
            metavar="ISO-8601",
            help="when the browser data was read, with its offset (default: the file's modification time)",
        )
        command.add_argument(
            "--device",
            type=_device,
            default=UNNAMED_DEVICE,
            help="the browser or installation the file was read from (default: the school's one unnamed device)",
        )
        command.add_argument(
            "--timezone",
            type=_zone,
            metavar="ZONE",
            help="the browser's IANA time zone (Intl.DateTimeFormat().resolvedOptions().timeZone), e.g. Europe/Skopje: "
            "the school's, unless an operator set one (set-timezone) or an earlier write fixed it; "
            "default: not reported (then SCHOOLMIG_DEFAULT_TIMEZONE)",
        )
    migrate.add_argument("--cutover", action="store_true", help="cut the school over once it is validated")
    migrate.add_argument("--override-audit", metavar="REASON", help="let it past critical audit findings, for this reason")
    migrate.add_argument("--json", action="store_true", help="machine-readable output")
    audit = commands.add_parser("audit", help="show the pre-migration audit of a school's latest snapshot")
    audit.add_argument("--school", required=True)
    audit.add_argument("--snapshot", help="a given snapshot instead of the latest")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    validate = commands.add_parser("validate", help="compare a school's tables with its verified backup, record by record")
    which = validate.add_mutually_exclusive_group(required=True)
    which.add_argument("--school")
    which.add_argument("--all", action="store_true", help="every school's latest released snapshot")
    validate.add_argument("--snapshot", help="a given snapshot instead of the latest released")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    override = commands.add_parser(
        "override-audit", help="let a snapshot blocked by critical audit findings go on, with a written reason"
    )
    override.add_argument("--school", required=True)
    override.add_argument("--snapshot", help="default: the school's current snapshot")
    override.add_argument("--reason", required=True)
    map_key = commands.add_parser(
        "map-key", help="read a key of the snapshot waiting at the audit gate as a domain, for one school (signed)"
    )
    map_key.add_argument("mapping", nargs="+", metavar="KEY=DOMAIN", help="e.g. attendanceRecords=attendance")
    map_key.add_argument("--school", required=True)
    map_key.add_argument("--snapshot", help="the snapshot waiting at the gate (default: the school's)")
    map_key.add_argument("--reason", required=True, help="why: kept in its audit with who mapped it")
    status = commands.add_parser("status", help="every school's phase, mode and progress")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    for action, text in (
        ("cutover", "cut a validated school over to the API (gated; rolls back on any failure)"),
        ("rollback", "roll a school back to localStorage"),
    ):
        lever = commands.add_parser(action, help=text)
        lever.add_argument("--school", required=True)
        lever.add_argument("--reason", default=f"{action} requested from the command line")
        lever.add_argument("--no-wait", action="store_true", help="ask, and return at once")
        lever.add_argument("--json", action="store_true", help="machine-readable output")
    redrive = commands.add_parser(
        "redrive", help="fan a school's snapshot out again from its verified backup (records lost in flight, e.g. with a broker)"
    )
    redrive.add_argument("--school", required=True)
    redrive.add_argument("--snapshot", help="default: the school's current snapshot")
    redrive.add_argument("--reason", default="re-drive requested from the command line")
    accept = commands.add_parser(
        "accept-conflict",
        help="accept writes in quarantine for a conflict of the data (a unique value still held), with a reason (signed)",
    )
    accept.add_argument("records", nargs="+", metavar="DOMAIN/ID", help="e.g. students/student-10")
    accept.add_argument("--school", required=True)
    accept.add_argument("--reason", required=True, help="why: kept with who accepted it, shown by validation")
    replay = commands.add_parser(
        "replay", help="check a synced school again: writes held for a conflict are tried again (after a fix), then validated"
    )
    replay.add_argument("--school", required=True)
    replay.add_argument("--reason", default="replay requested from the command line")
    set_zone = commands.add_parser(
        "set-timezone",
        help="set a school's time zone (before its first snapshot): dates the app wrote through toISOString() are "
        "read as that zone's calendar dates",
    )
    set_zone.add_argument("zone", type=_zone, metavar="ZONE", help="an IANA name, e.g. Europe/Skopje")
    set_zone.add_argument("--school", required=True)
    set_zone.add_argument("--reason", default="time zone set from the command line")
    backup = commands.add_parser("backup", help="verify or export the backups ingest keeps")
    backup_actions = backup.add_subparsers(dest="action", required=True)
    verify = backup_actions.add_parser("verify", help="re-check every backup copy against its SHA-256")
    verify.add_argument("--school")
    export = backup_actions.add_parser("export", help="write a snapshot back out, byte for byte")
    export.add_argument("--school", required=True)
    export.add_argument("--snapshot", help="default: the latest")
    export.add_argument("--out", type=Path, required=True)
    export_cmd = commands.add_parser(
        "export", help="rebuild a school's data from the tables as a file its app can load (the way back after a cutover)"
    )
    export_cmd.add_argument("--school", required=True)
    export_cmd.add_argument("--format", choices=["localstorage_dump", "mockdata_export"], default="localstorage_dump")
    export_cmd.add_argument("--out", type=Path, help="default: $SCHOOLMIG_STATE_DIR/exports/<school>-<time>.json")
    export_cmd.add_argument(
        "--verify",
        action="store_true",
        help="re-ingest it as a scratch school and check every record comes back equal (needed to roll back a completed cutover)",
    )
    export_cmd.add_argument("--json", action="store_true")
    topics = commands.add_parser(
        "topics", help="describe the pipeline's topics on the broker (--create: create the missing ones)"
    )
    topics.add_argument("--create", action="store_true", help="create missing topics with SCHOOLMIG_PARTITIONS partitions")
    topics.add_argument("--json", action="store_true", help="machine-readable output")
    demo = commands.add_parser("demo", help="write demo localStorage dumps at the spec's volumes")
    demo.add_argument("--out", type=Path, default=Path(".demo"))
    demo.add_argument("--schools", type=int, default=3)
    demo.add_argument("--seed", type=int, default=7)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = _settings()
    if args.command == "up":
        logging.getLogger("schoolmig").setLevel(logging.INFO)
        return asyncio.run(_up(settings, args.replicas))
    from schoolmig.runner import Job, plan_rounds

    if args.command == "run":
        missing = [str(f) for f in args.files if not f.is_file()]
        if missing:
            console.print(f"[red]no such file: {', '.join(missing)}[/]")
            return 2
        rounds = plan_rounds(args.files, args.school, args.taken_at, args.device, args.timezone)
        return asyncio.run(_run(settings, rounds, args.report, args.override_audit, args.replicas, args.cutover))
    if args.command == "migrate":
        if not args.file.is_file():
            console.print(f"[red]no such file: {args.file}[/]")
            return 2
        job = Job(args.school, args.file, args.taken_at, args.device, args.timezone)
        return asyncio.run(_migrate(settings, job, args.cutover, args.override_audit, args.json))
    if args.command == "publish":
        return asyncio.run(
            _publish(settings, Job(args.school, args.file, args.taken_at, args.device, args.timezone), args.snapshot_id)
        )
    if args.command == "audit":
        return asyncio.run(_audit(settings, args.school, args.snapshot, args.json))
    if args.command == "status":
        return asyncio.run(_status(settings, args.json))
    if args.command == "override-audit":
        return asyncio.run(_override(settings, args.school, args.snapshot, settings.operator, args.reason))
    if args.command in ("cutover", "rollback"):
        return asyncio.run(
            _operate(settings, args.command, args.school, settings.operator, args.reason, not args.no_wait, args.json)
        )
    if args.command == "validate":
        return asyncio.run(_validate(settings, args.school, args.snapshot, args.json))
    if args.command == "backup":
        return asyncio.run(
            _backup(settings, args.action, args.school, getattr(args, "snapshot", None), getattr(args, "out", None))
        )
    if args.command == "map-key":
        return asyncio.run(_map_key(settings, args.school, args.snapshot, args.mapping, args.reason))
    if args.command == "redrive":
        return asyncio.run(_redrive(settings, args.school, args.snapshot, args.reason))
    if args.command == "accept-conflict":
        return asyncio.run(_accept_conflicts(settings, args.school, args.records, args.reason))
    if args.command == "replay":
        return asyncio.run(_replay(settings, args.school, args.reason))
    if args.command == "set-timezone":
        return asyncio.run(_set_timezone(settings, args.school, args.zone, args.reason))
    if args.command == "export":
        return asyncio.run(_export(settings, args.school, args.format, args.out, args.verify, args.json))
    if args.command == "topics":
        return asyncio.run(_topics(settings, args.create, args.json))
    if args.command == "demo":
        return _demo(args.out, args.schools, args.seed)
    return 2


if __name__ == "__main__":
    sys.exit(main())
