"""``schoolmig run``: publish files, wait for the coordinator's reports, assemble the run report.

Files of different schools go together; files of one school go one after another (each
snapshot is reported before the next is published), so every report is complete.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from schoolmig.sdk import build_envelopes, publish_snapshot
from shared.catalog.domains import Domain
from shared.failures.policy import classify
from shared.ledger.accounting import LEDGER_WRITES, DomainCounts, Pair, record_counts, record_counts_many
from shared.ledger.quarantine import quarantine_entries
from shared.ledger.report import run_report, school_report
from shared.platform.db import create_pool
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.topics import Topics
from shared.wire.messages import UNNAMED_DEVICE, OperatorCommand, SnapshotManifest

log = logging.getLogger("schoolmig.runner")


@dataclass(frozen=True)
class Job:
    """One file to migrate as a snapshot of ``school_id``, read at ``taken_at`` (None: the
    file's modification time) from ``device_id`` (empty: the school's one unnamed device)."""

    school_id: str
    path: Path
    taken_at: datetime | None = None
    device_id: str = UNNAMED_DEVICE
    timezone: str | None = None
    """The reading browser's IANA zone (``--timezone``; None: not reported, see ``shared.catalog.timezones``)."""

    def read_time(self) -> tuple[datetime, str]:
        """When the file's data was read, and what says so."""
        if self.taken_at is not None:
            return self.taken_at, "--taken-at"
        return datetime.fromtimestamp(self.path.stat().st_mtime, UTC), "the file's modification time"

    def describe(self, manifest: SnapshotManifest) -> str:
        _, source = self.read_time()
        device = f"device {self.device_id}" if self.device_id else "the school's unnamed device (--device names one)"
        return (
            f"published {self.path.name} as {self.school_id}/{manifest.snapshot_id}: read at "
            f"{manifest.taken_at.isoformat()} ({source}), from {device}"
        )


async def send_command(bootstrap_servers: str, settings: Settings, *commands: OperatorCommand) -> None:
    """Operators' commands (cutover, rollback, audit override, …) to the coordinator, signed
    with the operator's key (``SCHOOLMIG_OPERATOR_KEY``): the actor recorded is that operator."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers)
    await producer.start()
    try:
        topic, keyring = Topics.from_settings(settings).operator_commands, Keyring.for_operator(settings)
        for command in commands:
            body = command.model_dump_json().encode()
            signed = keyring.sign(topic, body)  # the coordinator acts on nothing else
            headers = [(k, v.encode()) for k, v in signed.items()]
            headers.append(("correlation_id", command.command_id.encode()))  # a refusal unread names it
            await producer.send_and_wait(topic, body, key=command.school_id.encode(), headers=headers)
    finally:
        await producer.stop()


def manifest_for(job: Job, content: bytes) -> SnapshotManifest:
    """The manifest a job's file is published under, known before publishing (an override
    must name its snapshot first; a republish sends the same one)."""
    taken_at, _ = job.read_time()
    manifest, _ = build_envelopes(content, job.school_id, taken_at=taken_at, device_id=job.device_id)
    return manifest


async def send_override(bootstrap_servers: str, settings: Settings, school_id: str, snapshot_id: str, reason: str) -> None:
    """Ask the coordinator to let this snapshot (published next, with this id) past critical audit findings."""
    command = OperatorCommand(
        action="override_audit",
        school_id=school_id,
        snapshot_id=snapshot_id,
        actor=f"schoolmig run ({os.environ.get('USER', 'operator')})",
        reason=reason,
    )
    await send_command(bootstrap_servers, settings, command)


def school_from_filename(path: Path) -> str:
    """Default school id: the file name without extension, reduced to the allowed characters."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", path.stem).strip("-.") or "school"
    return cleaned[:64]


def plan_rounds(
    files: list[Path],
    school: str | None,
    taken_at: datetime | None = None,
    device_id: str = UNNAMED_DEVICE,
    timezone: str | None = None,
) -> list[list[Job]]:
    """Round k holds the k-th file of each school; a school's files never share a round, and
    go oldest reading first (``taken_at``, else each file's modification time; a file that
    cannot be read keeps its place after them): each record's version follows from its
    device's history in the order snapshots are released (``shared.ledger.devices``)."""
    per_school: dict[str, list[Path]] = {}
    for path in files:
        per_school.setdefault(school or school_from_filename(path), []).append(path)
    per_school = {s: sorted(paths, key=lambda p: _read_at(p, taken_at)) for s, paths in per_school.items()}
    depth = max((len(p) for p in per_school.values()), default=0)
    return [
        [Job(s, paths[k], taken_at, device_id, timezone) for s, paths in per_school.items() if k < len(paths)]
        for k in range(depth)
    ]


def _read_at(path: Path, taken_at: datetime | None) -> datetime:
    if taken_at is not None:
        return taken_at
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:  # reported when it is read
        return datetime.max.replace(tzinfo=UTC)


#: Called while a school migrates: (school id, counts per domain so far, phase).
OnProgress = Callable[[str, dict[Domain, DomainCounts], str | None], None]


async def wait_for_report(
    pool: asyncpg.Pool,
    school_id: str,
    snapshot_id: str,
    deadline: float,
    on_progress: OnProgress | None = None,
    *,
    overridden: bool = False,
) -> dict[str, Any] | None:
    """The coordinator's report; None at the deadline or as soon as ingest reports the
    snapshot incomplete (it will never be released). With ``overridden`` (an audit override
    was sent), a report saying the snapshot waits at the audit gate is not the last word:
    the override and the snapshot travel on different topics, either may come first."""
    while time.monotonic() < deadline:
        if on_progress is not None:
            counts = await record_counts(pool, school_id, snapshot_id)
            phase = await pool.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", school_id)
            on_progress(school_id, counts or {}, phase)
        row = await pool.fetchrow(
            """
            SELECT (SELECT report FROM migration.reports WHERE school_id = $1 AND snapshot_id = $2) AS report,
                   EXISTS (SELECT 1 FROM migration.incomplete_snapshots WHERE school_id = $1 AND snapshot_id = $2) AS incomplete
            """,
            school_id,
            snapshot_id,
        )
        if row["report"] is not None and not (overridden and row["report"].get("blocked")):
            return row["report"]
        if row["incomplete"]:
            return None
        await asyncio.sleep(0.25)
    return None


async def report_so_far(pool: asyncpg.Pool, school_id: str, snapshot_id: str) -> dict[str, Any]:
    """What the database says when no report came in time: counts as they stand."""
    phase = await pool.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", school_id)
    return school_report(
        school_id=school_id,
        snapshot_id=snapshot_id,
        phase=phase or "registered",
        counts=await record_counts(pool, school_id, snapshot_id) or {},
        quarantine=await quarantine_entries(pool, school_id, snapshot_id),
        validation=None,
    )


async def _movement(pool: asyncpg.Pool) -> tuple[int, ...]:
    """What moves while schools migrate, read in constant time whatever the number of schools
    (counting their ledger lines would read the whole ledger): rows written to the ledger and
    the quarantine, validations finished, phase moves."""
    row = await pool.fetchrow(
        f"""
        SELECT ({LEDGER_WRITES}) AS written,
               (SELECT count(*) FROM migration.validation_runs WHERE finished_at IS NOT NULL) AS validations,
               (SELECT coalesce(max(id), 0) FROM migration.phase_transitions) AS moves
        """
    )
    return int(row["written"]), int(row["validations"]), int(row["moves"])


async def wait_for_reports(
    pool: asyncpg.Pool,
    pairs: list[Pair],
    stall_timeout_s: float,
    on_progress: OnProgress | None = None,
    *,
    overridden: bool = False,
    poll_s: float = 0.5,
    progress_s: float = 1.0,
    incomplete_is_final: bool = True,
    republish: Callable[[list[Pair]], Awaitable[None]] | None = None,
    republish_after_s: float = 30.0,
) -> dict[Pair, dict[str, Any] | None]:
    """Each snapshot's report, or None for one ingest reports incomplete or refused (it will
    never be released) or one still waiting when nothing at all has moved for ``stall_timeout_s``
    (no record accounted for, no validation, no phase change): a healthy migration of any
    size is never given up on. With ``overridden``, see :func:`wait_for_report`. Without
    ``incomplete_is_final``, a snapshot reported incomplete is waited for still (a late chunk
    completes it). ``republish``: called with the snapshots not released ``republish_after_s``
    after the last call (their messages lost with a broker, say): it publishes them again,
    under the same ids (ingest takes what is missing, ignores the rest)."""
    pending = list(pairs)
    republished_at = time.monotonic()
    reports: dict[Pair, dict[str, Any] | None] = {}
    moved_at, last, shown_at, checked_at = time.monotonic(), None, 0.0, 0.0
    warned_at = 0.0
    while pending:
        try:
            await _poll_reports(pool, pending, reports, overridden, incomplete_is_final)
        except Exception as exc:
            if classify(exc) != "transient":
                raise
            # The database is away (a restart): wait for it, as the services do, and say so
            # (the stall timer goes on: a database that never comes back is given up on).
            if time.monotonic() - warned_at > 10:
                warned_at = time.monotonic()
                log.warning("the database is unavailable (%s); waiting for it", type(exc).__name__)
            if time.monotonic() - moved_at > stall_timeout_s:
                break
            await asyncio.sleep(max(poll_s, 1.0))
            continue
        pending = [p for p in pending if p not in reports]
        if not pending:
            break
        if republish is not None and time.monotonic() - republished_at > republish_after_s:
            republished_at = time.monotonic()
            try:
                if unreleased := await _unreleased(pool, pending):
                    log.warning(
                        "%d snapshot(s) not released after %.0fs: publishing them again", len(unreleased), republish_after_s
                    )
                    await republish(unreleased)
            except Exception as exc:  # the broker or the database still away: next time
                log.warning("publishing again failed (%s); trying later", type(exc).__name__)
        try:
            moved_at, last, shown_at, checked_at, stalled = await _observe(
                pool, pending, on_progress, progress_s, stall_timeout_s, moved_at, last, shown_at, checked_at
            )
        except Exception as exc:
            if classify(exc) != "transient":
                raise
            stalled = False
        if stalled:
            break
        await asyncio.sleep(poll_s)
    return {pair: reports.get(pair) for pair in pairs}


async def _unreleased(pool: asyncpg.Pool, pending: list[Pair]) -> list[Pair]:
    rows = await pool.fetch(
        """
        SELECT p.school_id, p.snapshot_id FROM unnest($1::text[], $2::text[]) AS p (school_id, snapshot_id)
         WHERE NOT EXISTS (SELECT 1 FROM migration.snapshots s
                            WHERE (s.school_id, s.snapshot_id) = (p.school_id, p.snapshot_id) AND s.released_at IS NOT NULL)
        """,
        [s for s, _ in pending],
        [n for _, n in pending],
    )
    return [(r["school_id"], r["snapshot_id"]) for r in rows]


async def _poll_reports(
    pool: asyncpg.Pool,
    pending: list[Pair],
    reports: dict[Pair, dict[str, Any] | None],
    overridden: bool,
    incomplete_is_final: bool,
) -> None:
    """Add the reports that are there (None for a snapshot that will never be released)."""
    rows = await pool.fetch(
        """
        SELECT p.school_id, p.snapshot_id, r.report,
               EXISTS (SELECT 1 FROM migration.incomplete_snapshots i
                        WHERE (i.school_id, i.snapshot_id) = (p.school_id, p.snapshot_id))
            OR EXISTS (SELECT 1 FROM migration.refused_snapshots f
                        WHERE (f.school_id, f.snapshot_id) = (p.school_id, p.snapshot_id)) AS incomplete
          FROM unnest($1::text[], $2::text[]) AS p (school_id, snapshot_id)
          LEFT JOIN migration.reports r USING (school_id, snapshot_id)
        """,
        [s for s, _ in pending],
        [n for _, n in pending],
    )
    for row in rows:
        pair = (row["school_id"], row["snapshot_id"])
        refused = row["report"] is not None and row["report"].get("phase") == "refused"  # never released: as below
        if row["report"] is not None and not refused and not (overridden and row["report"].get("blocked")):
            reports[pair] = row["report"]
        elif row["incomplete"] and incomplete_is_final:
            reports[pair] = None


async def _observe(
    pool: asyncpg.Pool,
    pending: list[Pair],
    on_progress: OnProgress | None,
    progress_s: float,
    stall_timeout_s: float,
    moved_at: float,
    last: Any,
    shown_at: float,
    checked_at: float,
) -> tuple[float, Any, float, float, bool]:
    """Progress now and then; whether nothing has moved for ``stall_timeout_s`` (given up)."""
    # Progress reads each pending school's counts: now and then, less often the more there are.
    if on_progress is not None and time.monotonic() >= shown_at + progress_s * max(1.0, len(pending) / 20):
        shown_at = time.monotonic()
        counts = await record_counts_many(pool, pending)
        phases = dict(
            await pool.fetch(
                "SELECT school_id, phase FROM migration.school_phase WHERE school_id = ANY($1)", [s for s, _ in pending]
            )
        )
        for pair in pending:
            on_progress(pair[0], counts.get(pair, {}), phases.get(pair[0]))
    if time.monotonic() >= checked_at + min(5.0, stall_timeout_s / 4):  # counting is not free: now and then
        checked_at = time.monotonic()
        if (now := await _movement(pool)) != last:
            moved_at, last = checked_at, now
        elif checked_at - moved_at > stall_timeout_s:
            return moved_at, last, shown_at, checked_at, True
    return moved_at, last, shown_at, checked_at, False


async def run_jobs(
    settings: Settings,
    bootstrap_servers: str,
    database_url: str,
    rounds: list[list[Job]],
    *,
    on_status: Callable[[str], None] = lambda _: None,
    on_progress: OnProgress | None = None,
    override_audit: str | None = None,
) -> dict[str, Any]:
    """``override_audit``: a written reason that lets these snapshots past critical audit
    findings (sent before each snapshot, so the gate knows it when the snapshot arrives)."""
    pool = await create_pool(database_url)
    schools: list[dict[str, Any]] = []
    try:
        for jobs in rounds:
            manifests = []
            for job in jobs:  # one file in memory at a time
                content = job.path.read_bytes()
                planned = manifest_for(job, content)  # the override names the snapshot published next
                if override_audit:
                    await send_override(bootstrap_servers, settings, job.school_id, planned.snapshot_id, override_audit)
                manifest = await publish_snapshot(
                    bootstrap_servers,
                    settings.resolved_ingest_topic,
                    job.school_id,
                    content,
                    snapshot_id=planned.snapshot_id,
                    taken_at=planned.taken_at,
                    device_id=job.device_id,
                    timezone=job.timezone,
                )
                del content
                on_status(job.describe(manifest))
                manifests.append(manifest)
            pairs = [(m.school_id, m.snapshot_id) for m in manifests]
            sent = {(m.school_id, m.snapshot_id): (job, m) for job, m in zip(jobs, manifests, strict=True)}

            async def again(unreleased: list[Pair], sent: dict[Pair, tuple[Job, SnapshotManifest]] = sent) -> None:
                for school_id, snapshot_id in unreleased:
                    job, manifest = sent[(school_id, snapshot_id)]
                    await publish_snapshot(
                        bootstrap_servers,
                        settings.resolved_ingest_topic,
                        school_id,
                        job.path.read_bytes(),
                        snapshot_id=snapshot_id,
                        taken_at=manifest.taken_at,
                        device_id=manifest.device_id,
                        timezone=manifest.timezone,
                    )
                    on_status(f"published {school_id}/{snapshot_id} again (not released yet)")

            reports = await wait_for_reports(
                pool, pairs, settings.run_stall_timeout_s, on_progress, overridden=bool(override_audit), republish=again
            )
            for school_id, snapshot_id in pairs:
                report = reports[(school_id, snapshot_id)]
                if report is None:
                    report = await report_so_far(pool, school_id, snapshot_id)
                    on_status(
                        f"{school_id}: no report (snapshot incomplete or refused, or nothing moved for "
                        f"{settings.run_stall_timeout_s:.0f}s): left at {report.get('phase')}"
                    )
                schools.append(report)
    finally:
        await pool.close()
    return run_report(schools)


async def cut_over(
    settings: Settings,
    bootstrap_servers: str,
    database_url: str,
    report: dict[str, Any],
    *,
    actor: str,
    on_status: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Cut every validated school of a run's report over to the API, all at once, and follow
    each until its cutover ends (``completed`` or ``rolled_back``). The report's schools get
    their final phase and a ``cutover`` entry; ``ok`` then also needs every cutover completed.

    It gives up only when no cutover has moved (a phase, a step) for longer than one step
    may take (the final sync's and the final validation's timeouts, or
    ``run_stall_timeout_s`` if longer): those schools are reported ``cutover: no_answer``, and
    their attempts go on in the coordinator (taken up again by the next ``schoolmig up``
    if this run's stack stops)."""
    wanted = [s for s in report["schools"] if s["phase"] == "validated"]
    patience = max(settings.run_stall_timeout_s, settings.barrier_timeout_s + settings.validation_timeout_s + 60)
    pool = await create_pool(database_url)
    try:
        for school in wanted:
            await send_command(
                bootstrap_servers,
                settings,
                OperatorCommand(action="cutover", school_id=school["school_id"], actor=actor, reason="schoolmig run --cutover"),
            )
            on_status(f"{school['school_id']}: cutover asked")
        pending = {s["school_id"]: s for s in wanted}
        seen: Any = None
        moved_at = time.monotonic()
        while pending and time.monotonic() - moved_at < patience:
            rows = await pool.fetch(
                """
                SELECT p.school_id, p.phase, (SELECT c.step FROM migration.cutovers c WHERE c.school_id = p.school_id
                                               ORDER BY c.started_at DESC LIMIT 1) AS step
                  FROM migration.school_phase p WHERE p.school_id = ANY($1)
                """,
                list(pending),
            )
            if (now := sorted(tuple(r) for r in rows)) != seen:
                seen, moved_at = now, time.monotonic()
            for row in rows:
                if row["phase"] in ("completed", "rolled_back"):
                    school = pending.pop(row["school_id"])
                    school["phase"], school["cutover"] = row["phase"], row["phase"]
                    on_status(f"{row['school_id']}: {row['phase']}")
            await asyncio.sleep(0.5)
        for school in pending.values():
            school["cutover"] = "no_answer"
            on_status(f"{school['school_id']}: its cutover did not move for {patience:.0f}s; it goes on in the coordinator")
    finally:
        await pool.close()
    ok = report["ok"] and all(s.get("cutover") == "completed" for s in report["schools"])
    return {**report, "ok": ok}
