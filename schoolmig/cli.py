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

from schoolmig.output import data_console, iso, print_json, to_json
from shared.catalog.timezones import UnknownZone, check_zone
from shared.platform.settings import Settings
from shared.wire.messages import UNNAMED_DEVICE

if TYPE_CHECKING:
    import asyncpg

    from schoolmig.decisions import Decision
    from schoolmig.runner import Job
    from shared.wire.messages import OperatorCommand

console = Console(stderr=True, soft_wrap=True)  # a message is one line, whatever the width


def _settings() -> Settings:
    return Settings()


# --------------------------------------------------------------------------- up


async def _up(settings: Settings, replicas: dict[str, int]) -> int:
    from schoolmig.stack import Stack, StackInfo

    held = _hold(settings.state_dir)  # one `up` per state dir, for as long as it runs
    if held is None:
        running = StackInfo.load_running(settings.state_dir)
        whose = f" (pid {running.pid})" if running else ""
        console.print(f"[red]a stack already runs from {settings.state_dir}{whose}: `schoolmig status` shows it[/]")
        return 2
    made_up = settings.operator_key is None
    stack = await Stack(settings, metrics_ports=True, replicas=replicas, durable=True).start()
    info = StackInfo.of(stack, os.getpid())
    info.save(settings.state_dir)
    targets = settings.state_dir / "prometheus-targets.json"  # for a Prometheus' file_sd_configs
    targets.write_text(json.dumps(info.prometheus_targets(), indent=2))
    console.print("stack up (Ctrl-C stops); `schoolmig status` shows this again:")
    for line in info.lines():
        print(f"  {line}", flush=True)
    print(f"  backups      {settings.backups.resolve()}", flush=True)
    print(f"  prometheus   file_sd targets in {targets}; a scrape config to paste:", flush=True)
    for line in info.scrape_config(targets).splitlines():
        print(f"    {line}", flush=True)
    if made_up and stack.settings.operator_key is not None:
        # Made up for this run only (never written): commands from another terminal need it.
        console.print(
            "no operator key (`schoolmig init` makes one that lasts); for this run only, commands from another "
            "terminal (cutover, rollback, override-audit) need:",
            soft_wrap=True,
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
    if unclean := {name: code for name, code in sorted(stack.exit_codes.items()) if code != 0}:
        console.print("did not stop cleanly: " + ", ".join(f"{n} (exit {c})" for n, c in unclean.items()), style="red")
        return 1
    console.print(f"stopped: all {len(stack.exit_codes)} services finished their work and exited cleanly")
    return 0


def _hold(state_dir: Path) -> int | None:
    """An exclusive lock on ``<state_dir>/up.lock``, held until this process ends (None: another
    process holds it). The kernel lets it go with the process, however it ends."""
    import fcntl

    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / "up.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _init(settings: Settings) -> int:
    from schoolmig.keys import init_secrets

    for made in init_secrets(settings.state_dir):
        print(f"{made.name:<13} {made.path}  ({'created, mode 0600' if made.created else 'kept: it exists'})")
    console.print(
        "`schoolmig up` and every command run with this state dir read them; elsewhere, give the same values "
        "through SCHOOLMIG_<NAME>_FILE (e.g. SCHOOLMIG_OPERATOR_KEY_FILE)",
        soft_wrap=True,
    )
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
    from schoolmig.progress import RunProgress
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
            shown = RunProgress()

            def show(school_id: str, counts: dict[Any, Any], phase: str | None) -> None:
                shown.update(school_id, *progress(counts), phase)
                status.update(shown.line())

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
    print_report(report, data_console())
    if report_path:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(to_json(report))
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

    bootstrap, dsn = _bootstrap(settings), _dsn(settings)
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
        print_json(report)
    else:
        print_report(report, data_console())
    if not report["ok"]:
        return 1
    if cutover:
        # stdout holds the report: the cutover's trail goes to stderr
        return await _operate(settings, "cutover", school, "schoolmig migrate --cutover", True, False, stdout=False)
    return 0


# --------------------------------------------------------------------------- publish, demo


def _bootstrap(settings: Settings) -> str:
    """The broker :func:`schoolmig.endpoints.located` found (``main`` locates before a command runs)."""
    return settings.kafka_bootstrap_servers or ""


def _dsn(settings: Settings) -> str:
    return settings.database_url or ""


async def _publish(settings: Settings, job: Job, snapshot_id: str | None = None) -> int:
    from rich.progress import Progress

    from schoolmig.sdk import publish_snapshot

    bootstrap = _bootstrap(settings)
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
    print_json(out | {"taken_at": manifest.taken_at, "taken_at_from": source, "device_id": job.device_id})
    return 0


async def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    from shared.platform.db import create_pool

    pool = await create_pool(_dsn(settings))
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
            print_json(audit)
        else:
            print_audit(school, audit, data_console())
        return 0

    return await _with_pool(settings, work)


async def _backup(settings: Settings, action: str, school: str | None, snapshot: str | None, out: Path | None) -> int:
    from schoolmig.admin import export_backup, verify_backups
    from schoolmig.render import print_backup_checks

    async def work(pool: asyncpg.Pool) -> int:
        if action == "verify":
            checks = await verify_backups(pool, school)
            print_backup_checks(checks, data_console())
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
            print_json({**result.__dict__, "path": str(result.path), "verified": result.verified})
        else:
            console.print(f"wrote {result.size_bytes} bytes to {result.path} (export {result.export_id}, sha256 {result.sha256})")
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
    from schoolmig.decisions import ask_all
    from schoolmig.render import print_validation, print_validation_summary
    from shared.ledger.schools import validation
    from shared.wire.messages import OperatorCommand, operator_run_id

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
        decisions = await ask_all(settings, asked)  # the coordinator's decisions first: a refusal at once
        if not_taken := [d for d in decisions if not d.taken]:
            if as_json:
                print_json([d.as_json() for d in not_taken])
            for d in not_taken:
                console.print(d.line(), style="red", markup=False)
            return 1
        results: dict[str, Any] = {}
        deadline = time.monotonic() + settings.validation_timeout_s  # from the last result: --all takes its time
        while len(results) < len(asked) and time.monotonic() < deadline:
            for command in (c for c in asked if c.command_id not in results):
                if (found := await validation(pool, operator_run_id(command.command_id))) is not None:
                    results[command.command_id] = found
                    deadline = time.monotonic() + settings.validation_timeout_s
            await asyncio.sleep(0.5)
        if len(results) < len(asked):
            console.print(f"[red]no result from the validator in {settings.validation_timeout_s:.0f}s: is it up?[/]")
            return 1
        done = [results[c.command_id] for c in asked]
        if as_json:
            print_json([r.model_dump(mode="json") for r in done] if school is None else done[0].model_dump(mode="json"))
        elif school is None:
            print_validation_summary([r.model_dump(mode="json") for r in done], data_console())
        else:
            print_validation(done[0].model_dump(mode="json"), data_console())
        return 0 if all(r.ok for r in done) else 1

    return await _with_pool(settings, work)


async def _status(settings: Settings, as_json: bool, watch: float | None) -> int:
    from schoolmig.render import print_status
    from schoolmig.stack import StackInfo
    from shared.ledger.overview import school_rows

    running = StackInfo.load_running(settings.state_dir)

    async def work(pool: asyncpg.Pool) -> int:
        while True:
            schools = await school_rows(pool)
            if as_json and watch:  # a stream: one document per line
                print(to_json(schools, one_line=True), flush=True)
            elif as_json:
                print_json(schools)  # the schools only, as ever (stack.json has the rest)
            else:
                if watch:
                    data_console().clear()
                if running:
                    console.print(f"stack (pid {running.pid}):")
                    for line in running.lines():
                        print(f"  {line}")
                print_status(schools, data_console())
            if not watch:
                return 0
            await asyncio.sleep(watch)

    return await _with_pool(settings, work)


async def _operate(
    settings: Settings, action: str, school: str, reason: str, wait: bool, as_json: bool, *, stdout: bool = True
) -> int:
    """Ask the coordinator to cut a school over or roll it back: its decision comes back at
    once (a refusal with its reason, exit 1); then, unless ``--no-wait``, the phase moves are
    followed until the cutover or rollback ends."""
    import time

    from schoolmig.decisions import ask
    from shared.ledger.schools import transitions
    from shared.platform.db import create_pool
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action=action, school_id=school, actor=settings.operator, reason=reason)  # type: ignore[arg-type]
    pool = await create_pool(_dsn(settings))
    try:
        before = len(await transitions(pool, school))
        decision = await ask(settings, command)
        moves: list[dict[str, Any]] = []
        if wait and decision.taken:
            deadline = time.monotonic() + settings.run_stall_timeout_s
            ended = {"completed", "rolled_back"}
            while time.monotonic() < deadline:
                moves = (await transitions(pool, school))[before:]
                if moves and moves[-1]["to_phase"] in ended or (action == "rollback" and moves):
                    break
                await asyncio.sleep(0.5)
    finally:
        await pool.close()
    goal = "completed" if action == "cutover" else "rolled_back"
    done = decision.taken and (not wait or bool(moves) and moves[-1]["to_phase"] == goal)
    if as_json:
        print_json({**decision.as_json(), "transitions": moves, "ok": done})
    else:
        _tell(decision, stdout=stdout)
        for m in moves:
            line = f"{iso(m['at'])} {m['from_phase']} → {m['to_phase']} by {m['actor']}: {m['reason']}"
            if stdout:
                print(line, flush=True)
            else:
                console.print(line, markup=False)
        if wait and decision.taken and not done:
            ended_in = moves[-1]["to_phase"] if moves else None
            console.print(
                f"{school}: the cutover ended rolled back (`schoolmig history --school {school}` says why)"
                if action == "cutover" and ended_in == "rolled_back"
                else f"{school} has not ended the {action} yet: `schoolmig history --school {school}`",
                style="yellow",
                markup=False,
            )
    return 0 if done else 1


async def _answered(settings: Settings, command: OperatorCommand) -> int:
    """Send ``command`` and print the coordinator's decision: exit 1 when it refused, or
    when no answer came (then the command may still be acted on: `schoolmig history`)."""
    from schoolmig.decisions import ask

    decision = await ask(settings, command)
    _tell(decision)
    return 0 if decision.taken else 1


def _tell(decision: Decision, *, stdout: bool = True) -> None:
    """The coordinator's answer: on stdout when it acted, on stderr when it refused or was silent."""
    if stdout and decision.taken:
        print(decision.line(), flush=True)
    else:
        console.print(
            decision.line(), style="red" if decision.refused else "yellow" if not decision.answered else None, markup=False
        )


async def _override(settings: Settings, school: str, snapshot: str | None, actor: str, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="override_audit", school_id=school, snapshot_id=snapshot, actor=actor, reason=reason)
    return await _answered(settings, command)


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
    return await _answered(settings, command)


async def _redrive(settings: Settings, school: str, snapshot: str | None, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="redrive", school_id=school, snapshot_id=snapshot, actor=settings.operator, reason=reason)
    return await _answered(settings, command)


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
    return await _answered(settings, command)


async def _replay(settings: Settings, school: str, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="replay", school_id=school, actor=settings.operator, reason=reason)
    return await _answered(settings, command)


async def _set_timezone(settings: Settings, school: str, zone: str, reason: str) -> int:
    from shared.wire.messages import OperatorCommand

    command = OperatorCommand(action="set_timezone", school_id=school, timezone=zone, actor=settings.operator, reason=reason)
    return await _answered(settings, command)


async def _topics(settings: Settings, create: bool, as_json: bool) -> int:
    """The pipeline's topics as they are on the broker (and created first with ``--create``:
    what is missing, with ``SCHOOLMIG_PARTITIONS`` partitions; existing ones are left as they
    are, since Kafka can only add partitions, which would move keys between them)."""
    from shared.platform.kafka import describe_topics, ensure_topics

    created = await ensure_topics(settings) if create else []
    described = await describe_topics(settings)
    if as_json:
        print_json({"created": created, "topics": described})
    else:
        for t in described:
            state = "created" if t["topic"] in created else ("ok" if t["exists"] else "MISSING")
            note = (
                ""
                if not t["exists"] or t["partitions"] == settings.partitions
                else f"  (SCHOOLMIG_PARTITIONS is {settings.partitions})"
            )
            print(f"{t['topic']:<40} {state:<8} {t['partitions']:>3} partition(s){'  compacted' if t['compacted'] else ''}{note}")
    return 0 if all(t["exists"] for t in described) else 1


async def _deadletters(
    settings: Settings, school: str | None, reason: str | None, since: datetime | None, follow: bool, as_json: bool
) -> int:
    """The dead letters, oldest first (``--follow``: then new ones as they come, until Ctrl-C):
    one line each, or one JSON object per line; never a payload (it may hold personal data)."""
    from schoolmig.letters import LetterFilter, LetterReader
    from shared.platform.topics import Topics

    reader = await LetterReader(_bootstrap(settings), Topics.from_settings(settings).deadletter).start()
    shown = 0
    try:
        async for letter in reader.letters(LetterFilter(school, reason, since), follow=follow):
            print(to_json(letter.as_json(), one_line=True) if as_json else letter.line(), flush=True)
            shown += 1
    finally:
        await reader.stop()
    if not as_json and not follow:
        console.print(f"{shown} dead letter(s)")
    return 0


async def _history(settings: Settings, school: str, as_json: bool) -> int:
    from shared.ledger.schools import history

    async def work(pool: asyncpg.Pool) -> int:
        rows = await history(pool, school)
        if not rows:
            console.print(f"[red]nothing is known of school {school}[/]")
            return 1
        if as_json:
            print_json(rows)
            return 0
        for r in rows:
            why = f" — {r['reason']}" if r["reason"] else ""
            outcome = f" → {r['outcome']}" if r["outcome"] else ""
            print(f"{iso(r['at'])}  {r['kind']:<7} {r['what']}  by {r['actor']}{why}{outcome}")
        return 0

    return await _with_pool(settings, work)


async def _report(settings: Settings, since: datetime | None, as_json: bool) -> int:
    """The stakeholders' progress report (``schoolmig.stakeholders``): markdown, or JSON."""
    from datetime import UTC

    from schoolmig.stakeholders import markdown
    from shared.ledger.overview import overview

    async def work(pool: asyncpg.Pool) -> int:
        figures = await overview(pool, since=since)
        if as_json:
            print_json(figures)
        else:
            print(markdown(figures, datetime.now(UTC)), end="")
        return 0

    return await _with_pool(settings, work)


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
    parser.add_argument("--version", action="version", version=f"schoolmig {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    migrate.add_argument("--school", required=True, help=SCHOOL_HELP)
    publish = commands.add_parser("publish", help="publish one file to the ingest topic")
    publish.add_argument("file", type=Path)
    publish.add_argument("--school", required=True, help=SCHOOL_HELP)
    publish.add_argument(
        "--snapshot",
        "--snapshot-id",
        dest="snapshot_id",
        help="publish an interrupted upload again under its id (released once); default: the reading's own id",
    )
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
    audit.add_argument("--school", required=True, help=SCHOOL_HELP)
    audit.add_argument("--snapshot", help="a given snapshot instead of the latest")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    validate = commands.add_parser("validate", help="compare a school's tables with its verified backup, record by record")
    which = validate.add_mutually_exclusive_group(required=True)
    which.add_argument("--school", help=SCHOOL_HELP)
    which.add_argument("--all", action="store_true", help="every school's latest released snapshot")
    validate.add_argument("--snapshot", help="a given snapshot instead of the latest released")
    validate.add_argument("--json", action="store_true", help="machine-readable output")
    override = commands.add_parser(
        "override-audit", help="let a snapshot blocked by critical audit findings go on, with a written reason"
    )
    override.add_argument("--school", required=True, help=SCHOOL_HELP)
    override.add_argument("--snapshot", help="default: the school's current snapshot")
    override.add_argument("--reason", required=True)
    map_key = commands.add_parser(
        "map-key", help="read a key of the snapshot waiting at the audit gate as a domain, for one school (signed)"
    )
    map_key.add_argument("mapping", nargs="+", metavar="KEY=DOMAIN", help="e.g. attendanceRecords=attendance")
    map_key.add_argument("--school", required=True, help=SCHOOL_HELP)
    map_key.add_argument("--snapshot", help="the snapshot waiting at the gate (default: the school's)")
    map_key.add_argument("--reason", required=True, help="why: kept in its audit with who mapped it")
    status = commands.add_parser("status", help="every school's phase, mode and progress, why it waits and what moves it")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--watch",
        nargs="?",
        type=_seconds,
        const=2.0,
        metavar="SECONDS",
        help="show it again every SECONDS (0.2 to 86400, default 2) until Ctrl-C; with --json, one JSON document a line",
    )
    commands.add_parser(
        "init", help="make the secrets a single-machine deployment runs with (operator key, service key, API token), mode 0600"
    )
    letters = commands.add_parser("deadletters", help="the messages a service could not use, with the reason (no payloads)")
    letters.add_argument("--school", help="only those naming this school")
    letters.add_argument("--reason", help="only this reason, e.g. invalid_envelope")
    letters.add_argument("--since", type=_since, metavar="AGE|ISO-8601", help="only newer ones: 30m, 2h, 1d, or a time")
    letters.add_argument("--follow", "-f", action="store_true", help="then keep printing new ones until Ctrl-C")
    letters.add_argument("--json", action="store_true", help="one JSON object per line")
    report = commands.add_parser(
        "report", help="the stakeholders' progress report: overview, phases, moves, what waits, errors (markdown or JSON)"
    )
    report.add_argument("--since", type=_since, metavar="AGE|ISO-8601", help="also what moved since then: 30m, 2h, 1d, or a time")
    report.add_argument("--json", action="store_true", help="machine-readable output")
    history = commands.add_parser("history", help="a school's phase moves, operators' commands (who, why, outcome) and exports")
    history.add_argument("--school", required=True, help=SCHOOL_HELP)
    history.add_argument("--json", action="store_true", help="machine-readable output")
    for action, text in (
        ("cutover", "cut a validated school over to the API (gated; rolls back on any failure)"),
        ("rollback", "roll a school back to localStorage"),
    ):
        lever = commands.add_parser(action, help=text)
        lever.add_argument("--school", required=True, help=SCHOOL_HELP)
        lever.add_argument("--reason", default=f"{action} requested from the command line")
        lever.add_argument("--no-wait", action="store_true", help="ask, and return at once")
        lever.add_argument("--json", action="store_true", help="machine-readable output")
    redrive = commands.add_parser(
        "redrive", help="fan a school's snapshot out again from its verified backup (records lost in flight, e.g. with a broker)"
    )
    redrive.add_argument("--school", required=True, help=SCHOOL_HELP)
    redrive.add_argument("--snapshot", help="default: the school's current snapshot")
    redrive.add_argument("--reason", default="re-drive requested from the command line")
    accept = commands.add_parser(
        "accept-conflict",
        help="accept writes in quarantine for a conflict of the data (a unique value still held), with a reason (signed)",
    )
    accept.add_argument("records", nargs="+", metavar="DOMAIN/ID", help="e.g. students/student-10")
    accept.add_argument("--school", required=True, help=SCHOOL_HELP)
    accept.add_argument("--reason", required=True, help="why: kept with who accepted it, shown by validation")
    replay = commands.add_parser(
        "replay", help="check a synced school again: writes held for a conflict are tried again (after a fix), then validated"
    )
    replay.add_argument("--school", required=True, help=SCHOOL_HELP)
    replay.add_argument("--reason", default="replay requested from the command line")
    set_zone = commands.add_parser(
        "set-timezone",
        help="set a school's time zone (before its first snapshot): dates the app wrote through toISOString() are "
        "read as that zone's calendar dates",
    )
    set_zone.add_argument("zone", type=_zone, metavar="ZONE", help="an IANA name, e.g. Europe/Skopje")
    set_zone.add_argument("--school", required=True, help=SCHOOL_HELP)
    set_zone.add_argument("--reason", default="time zone set from the command line")
    backup = commands.add_parser("backup", help="verify or export the backups ingest keeps")
    backup_actions = backup.add_subparsers(dest="action", required=True)
    verify = backup_actions.add_parser("verify", help="re-check every backup copy against its SHA-256")
    verify.add_argument("--school", help="only this school's backups")
    export = backup_actions.add_parser("export", help="write a snapshot back out, byte for byte")
    export.add_argument("--school", required=True, help=SCHOOL_HELP)
    export.add_argument("--snapshot", help="default: the latest")
    export.add_argument("--out", type=Path, required=True)
    export_cmd = commands.add_parser(
        "export", help="rebuild a school's data from the tables as a file its app can load (the way back after a cutover)"
    )
    export_cmd.add_argument("--school", required=True, help=SCHOOL_HELP)
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
    for name, sub in commands.choices.items():  # each its description, and an example
        sub.description = next(a.help for a in commands._choices_actions if a.dest == name)
        sub.epilog = "example:\n  " + EXAMPLES[name]
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


SCHOOL_HELP = "the school's id, as its data was published (status lists them)"

EXAMPLES: dict[str, str] = {
    "up": "schoolmig init && schoolmig up   # then, in another terminal: schoolmig status",
    "run": "schoolmig run .demo/school-1.json --report report.json",
    "migrate": "schoolmig migrate school-1.json --school school-1 --timezone Europe/Skopje --cutover",
    "publish": "schoolmig publish school-1.json --school school-1 --device office-pc --timezone Europe/Skopje",
    "audit": "schoolmig audit --school school-1",
    "validate": "schoolmig validate --school school-1",
    "override-audit": 'schoolmig override-audit --school school-1 --reason "grades value cut short in the browser"',
    "map-key": 'schoolmig map-key attendanceRecords=attendance --school school-1 --reason "renamed in app 2.3"',
    "status": "schoolmig status --watch",
    "init": "schoolmig init   # before the first `schoolmig up`",
    "deadletters": "schoolmig deadletters --school school-1 --since 1d",
    "history": "schoolmig history --school school-1",
    "report": "schoolmig report --since 1d > progress.md",
    "cutover": 'schoolmig cutover --school school-1 --reason "validated, school informed"',
    "rollback": 'schoolmig export --school school-1 --verify && schoolmig rollback --school school-1 --reason "…"',
    "redrive": "schoolmig redrive --school school-1",
    "accept-conflict": 'schoolmig accept-conflict students/student-10 --school school-1 --reason "same pupil, checked"',
    "replay": "schoolmig replay --school school-1",
    "set-timezone": "schoolmig set-timezone Europe/Skopje --school school-1",
    "backup": "schoolmig backup verify --school school-1",
    "export": "schoolmig export --school school-1 --verify",
    "topics": "schoolmig topics --create",
    "demo": "schoolmig demo --out .demo --schools 3",
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("schoolmig")
    except PackageNotFoundError:
        return "unknown"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.2 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 0.2 to 86400")
    return value


def _since(text: str) -> datetime:
    """``30m``, ``2h``, ``1d`` ago, or an ISO-8601 time with its offset."""
    from datetime import UTC, timedelta

    if match := re.fullmatch(r"(\d+)([smhd])", text):
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match[2]]
        return datetime.now(UTC) - timedelta(**{unit: int(match[1])})
    return _instant(text)


#: Commands that start what they need, or need nothing running.
LOCAL = frozenset({"up", "run", "demo", "init"})
#: Commands that read the broker only.
BROKER_ONLY = frozenset({"topics", "deadletters", "publish"})
#: Commands that sign what they send as the operator.
SIGNED = frozenset(
    {"cutover", "rollback", "override-audit", "map-key", "redrive", "accept-conflict", "replay", "set-timezone", "validate"}
)
NO_KEY = (
    "no operator key: set SCHOOLMIG_OPERATOR_KEY (or SCHOOLMIG_OPERATOR_KEY_FILE), or run `schoolmig init` "
    "before `schoolmig up` so that commands on this machine find it"
)


def main(argv: list[str] | None = None) -> int:
    """Every command: a refusal, a missing stack or key is one line on stderr and a non-zero exit."""
    import asyncpg
    from aiokafka.errors import KafkaConnectionError
    from pydantic import ValidationError

    from schoolmig.endpoints import NoStack, located
    from shared.platform.signing import MissingKey

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings()
    except (ValidationError, ValueError) as exc:
        console.print(f"settings: {_first_error(exc)}", style="red", markup=False)
        return 2
    needs_key = args.command in SIGNED or (args.command == "migrate" and (args.cutover or args.override_audit))
    if needs_key and settings.operator_key is None:
        console.print(NO_KEY, style="red", markup=False)
        return 2
    try:
        if args.command not in LOCAL:
            settings = located(settings, database=args.command not in BROKER_ONLY)
        return _dispatch(args, settings)
    except NoStack as exc:
        console.print(str(exc), style="red", markup=False)
        return 2
    except MissingKey:
        console.print(NO_KEY, style="red", markup=False)
        return 2
    except (KafkaConnectionError, OSError, asyncpg.exceptions.CannotConnectNowError) as exc:
        if isinstance(exc, OSError) and not _unreachable(exc):
            raise  # a file that cannot be written, say: its own traceback
        where = f"the broker ({settings.kafka_bootstrap_servers}) or the database"
        console.print(
            f"cannot reach {where}: {type(exc).__name__}; is the stack up? (`schoolmig status`)", style="red", markup=False
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _unreachable(exc: OSError) -> bool:
    """A connection that could not be made (refused, no route, timed out), not a file error."""
    import errno

    return (
        isinstance(exc, ConnectionError | TimeoutError)
        or exc.errno
        in (
            errno.ECONNREFUSED,
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.ETIMEDOUT,
        )
        or "Connect call failed" in str(exc)
    )


def _first_error(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        return f"{'.'.join(str(p) for p in error['loc']) or 'value'}: {error['msg']}"
    return str(exc).splitlines()[0]


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "init":
        return _init(settings)
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
        return asyncio.run(_status(settings, args.json, args.watch))
    if args.command == "override-audit":
        return asyncio.run(_override(settings, args.school, args.snapshot, settings.operator, args.reason))
    if args.command in ("cutover", "rollback"):
        return asyncio.run(_operate(settings, args.command, args.school, args.reason, not args.no_wait, args.json))
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
    if args.command == "deadletters":
        return asyncio.run(_deadletters(settings, args.school, args.reason, args.since, args.follow, args.json))
    if args.command == "history":
        return asyncio.run(_history(settings, args.school, args.json))
    if args.command == "report":
        return asyncio.run(_report(settings, args.since, args.json))
    return 2


if __name__ == "__main__":
    sys.exit(main())
