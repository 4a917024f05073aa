"""Cutover and rollback against the real system: the :class:`CutoverPorts` the service
runs ``cutover.run_cutover`` with, and the operator's entry points (CLI command topic and
HTTP API both end here)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from faststream.kafka import KafkaBroker

from services.coordinator.cutover import ROLLING_BACK, Attempt, CutoverFailed, LeaseLost, run_cutover
from services.coordinator.phases import (
    IllegalTransition,
    Phase,
    audit_blocks,
    steps_for_snapshot,
)
from services.coordinator.store import CoordinatorStore
from shared.catalog.domains import Domain
from shared.failures.policy import transient_delay
from shared.ledger import outcomes, quarantine
from shared.ledger.accounting import record_counts
from shared.ledger.quarantine import quarantine_entries
from shared.ledger.report import school_report
from shared.ledger.schools import latest_passing, validation
from shared.platform import outbox
from shared.platform.leases import Lease, named
from shared.platform.outbox import Outbound
from shared.platform.settings import Settings
from shared.platform.signing import Keyring, publish
from shared.platform.telemetry import PipelineMetrics
from shared.platform.topics import Topics, batch_key
from shared.wire.barrier import expected_acks, partition_counts
from shared.wire.batching import header, pack, rows_entry
from shared.wire.messages import (
    Barrier,
    ChangeOutcome,
    MappedRecord,
    Mode,
    OperatorCommand,
    Redrive,
    ReportReady,
    SchoolMode,
    SnapshotReleased,
    SnapshotWithheld,
    ValidationRequested,
    operator_run_id,
)

log = logging.getLogger("schoolmig.coordinator")

#: Where a school's clients read and write in each phase (before cutover, after rollback).
MODE_OF_PHASE: dict[Phase, Mode] = {
    Phase.REGISTERED: Mode.LOCAL_STORAGE,
    Phase.AUDITED: Mode.LOCAL_STORAGE,
    Phase.BACKED_UP: Mode.LOCAL_STORAGE,
    Phase.DUAL_WRITE: Mode.HYBRID,
    Phase.SYNCED: Mode.HYBRID,
    Phase.VALIDATED: Mode.HYBRID,
    Phase.CUTOVER: Mode.HYBRID,
    Phase.COMPLETED: Mode.API,
    Phase.ROLLED_BACK: Mode.LOCAL_STORAGE,
}


def gauge_phase(metrics: PipelineMetrics, school_id: str, current: Phase) -> None:
    """The phase gauge: 1 for the school's current phase, 0 for those it has left."""
    for phase in Phase:
        if phase is current or (school_id, phase.value) in metrics.schools.phase:
            metrics.schools.phase[(school_id, phase.value)] = int(phase is current)


def _superseded_why(newer: str, same_instant: bool) -> str:
    if same_instant:
        return (
            f"read at the same instant as snapshot {newer}, which the school is on; of two snapshots read at "
            f"one instant the one with the greater id stands: not migrated"
        )
    return f"taken before snapshot {newer}, which the school is on: not migrated"


@dataclass
class Operations:
    store: CoordinatorStore
    broker: KafkaBroker
    settings: Settings
    metrics: PipelineMetrics
    actor: str = "coordinator"
    running: dict[str, asyncio.Task[bool]] = field(default_factory=dict)
    """The cutovers this replica runs (it holds each school's cutover lease meanwhile)."""
    leases: dict[str, Lease] = field(default_factory=dict)
    resume_after: dict[str, float] = field(default_factory=dict)
    """Not before then: a cutover that stopped on an error is taken up again after a pause."""
    _launching: set[str] = field(default_factory=set)
    clients: KafkaBroker | None = None
    """The producer for the topics clients read (``shared.platform.kafka.make_client_publisher``); None: ``broker``."""

    @cached_property
    def keyring(self) -> Keyring:
        return Keyring.for_service(self.settings)

    @property
    def topics(self) -> Topics:
        return Topics.from_settings(self.settings)

    # ------------------------------------------------------------------ entry points

    async def handle(self, command: OperatorCommand) -> str:
        """Start a cutover, do a rollback, or override an audit; returns what happened."""
        if command.action == "cutover":
            return await self.start_cutover(command.school_id, command.actor, command.reason)
        if command.action == "override_audit":
            return await self.override_audit(command.school_id, command.snapshot_id, command.actor, command.reason)
        if command.action == "redrive":
            return await self.redrive(command.school_id, command.snapshot_id, command.actor, command.reason)
        if command.action == "map_key":
            return await self.map_key(command.school_id, command.snapshot_id, command.key_aliases, command.actor, command.reason)
        if command.action == "accept_conflict":
            return await self.accept_conflicts(command.school_id, command.records, command.actor, command.reason)
        if command.action == "replay":
            return await self.replay(command.school_id, command.actor, command.reason)
        if command.action == "validate":
            return await self.validate(command.school_id, command.snapshot_id, command.command_id)
        if command.action == "set_timezone":
            assert command.timezone is not None  # OperatorCommand refuses a set_timezone without one
            return await self.set_timezone(command.school_id, command.timezone, command.actor, command.reason)
        return await self.rollback(command.school_id, command.actor, command.reason)

    async def advance(self, event: SnapshotReleased) -> None:
        """Take a school as far as a released snapshot's evidence allows."""
        school_id = event.school_id
        if (twin := await self.store.unchanged_of(school_id, event.snapshot_id)) is not None:
            await self.unchanged(school_id, event.snapshot_id, twin)
            return
        if (found := await self.store.superseded_by(school_id, event.snapshot_id)) is not None:
            # Taken before the one the school is on, released after it: last writer wins, so
            # it is not adopted (its records never override newer ones in the tables either).
            newer, same_instant = found
            log.warning(
                "%s: snapshot %s was taken before %s, which the school is on: superseded, not adopted",
                school_id,
                event.snapshot_id,
                newer,
            )
            await self.superseded(school_id, event.snapshot_id, newer, _superseded_why(newer, same_instant))
            return
        current, syncing = await self.store.phase_of(school_id)
        override = await self.store.override_of(school_id, event.snapshot_id)
        steps = steps_for_snapshot(current, event, override)
        if current is Phase.DUAL_WRITE:
            await self.store.set_snapshot(school_id, event.snapshot_id)
            log.info("%s: now syncing snapshot %s", school_id, event.snapshot_id)
            if syncing and syncing != event.snapshot_id:  # replaced before it synced: its last word too
                await self.superseded(
                    school_id, syncing, event.snapshot_id, f"replaced by the newer snapshot {event.snapshot_id} while it synced"
                )
        elif not steps and not audit_blocks(event, override):
            log.warning("%s: snapshot %s ignored in phase %s", school_id, event.snapshot_id, current)
        for phase, reason in steps:
            try:
                await self.store.transition(school_id, event.snapshot_id, phase, actor=self.actor, reason=reason)
            except IllegalTransition:  # moved meanwhile (the snapshot and its override raced): theirs stands
                log.info("%s: already moved past %s", school_id, phase.value)
                return
            await self.phase_changed(school_id, phase, reason)
            log.info("%s: -> %s", school_id, phase.value)
        if audit_blocks(event, override) and (await self.store.phase_of(school_id))[0] is Phase.REGISTERED:
            await self.store.block(event)
            if await self.store.override_of(school_id, event.snapshot_id) is not None:
                # An operator's override came while this release was judged, and its handler
                # found nothing blocked yet. Each side writes, then looks (the override is
                # saved, then the block looked for; the block is saved, then the override): one
                # of the two always sees the other, so the snapshot never waits for nothing.
                await self.advance(event)
                return
            why = (
                f"{event.audit.critical_findings} critical audit finding(s) (see `schoolmig audit`): "
                f"the migration waits for an operator's override (`schoolmig override-audit`)"
            )
            await self.report(school_id, event.snapshot_id, Phase.REGISTERED, blocked=why)
            log.warning("%s: snapshot %s blocked at the audit gate", school_id, event.snapshot_id)

    async def superseded(self, school_id: str, snapshot_id: str, newer: str, why: str) -> None:
        """A snapshot's own last word when a newer one takes its place, for whoever waits for
        it (``schoolmig run``): phase ``superseded``, by which."""
        report = school_report(
            school_id=school_id,
            snapshot_id=snapshot_id,
            phase="superseded",
            counts=await record_counts(self.store.pool, school_id, snapshot_id) or {},
            quarantine=await quarantine_entries(self.store.pool, school_id, snapshot_id),
            validation=None,
        )
        report |= {"superseded_by": newer, "superseded": why}
        await self.store.save_report(school_id, snapshot_id, report)
        await self.report_ready(
            ReportReady(school_id=school_id, snapshot_id=snapshot_id, phase="superseded", reason="superseded", message=why)
        )

    async def withheld(self, event: SnapshotWithheld) -> None:
        """A snapshot ingest kept and did not fan out: its own last word."""
        if event.withheld == "unchanged":
            await self.unchanged(event.school_id, event.snapshot_id, event.because_of)
        else:
            found = await self.store.superseded_by(event.school_id, event.snapshot_id)
            newer, same_instant = found if found is not None else (event.because_of, False)
            await self.superseded(event.school_id, event.snapshot_id, newer, _superseded_why(newer, same_instant))

    async def not_taken(self, school_id: str, snapshot_id: str, phase: str, reason: str, message: str) -> None:
        """A snapshot ingest refused (``refused``: its mode, its size, parts that do not assemble):
        a report of its own; or one still missing parts after the timeout (``incomplete``: a
        late part completes it, so no report is kept, ``migration.incomplete_snapshots`` says
        so). Either way its ``report.ready``, with the reason."""
        if phase == "refused":
            report = school_report(
                school_id=school_id, snapshot_id=snapshot_id, phase=phase, counts={}, quarantine=[], validation=None
            ) | {"reason": reason, phase: message}
            await self.store.save_report(school_id, snapshot_id, report)
        await self.report_ready(
            ReportReady(school_id=school_id, snapshot_id=snapshot_id, phase=phase, reason=reason, message=message)
        )
        log.warning("%s: snapshot %s %s: %s", school_id, snapshot_id, phase, reason)

    async def report_ready(self, event: ReportReady) -> None:
        """``report.ready`` for operators (events) and for the school's clients (outcomes)."""
        key = event.school_id.encode()
        await publish(self.broker, self.keyring, event, self.topics.events, key=key)
        await self.tell_clients(event, event.school_id)

    async def announce_outcomes(self, still_leading: Callable[[], Awaitable[bool]] | None = None, limit: int = 500) -> int:
        """Up to ``limit`` changes whose outcome was never announced, or was open (pending,
        waiting, quarantined), the least recently checked first: each whose outcome is new or
        has moved is published to its client (``change.outcome`` on the outcomes topic), then
        recorded (a crash in between announces it again: the same answer twice, never none).
        ``still_leading``: asked before each client's group (one coordinator announces)."""
        told = 0
        groups: dict[tuple[str, str], dict[int, str | None]] = {}
        for d in await outcomes.due(self.store.pool, limit):
            groups.setdefault((d.school_id, d.client_id), {})[d.seq] = d.last
        for (school_id, client_id), last in groups.items():
            if still_leading is not None and not await still_leading():
                break
            found = await outcomes.change_outcomes(
                self.store.pool, school_id, client_id=client_id, seqs=sorted(last), limit=len(last)
            )
            moved = [f for f in found if last.get(f.seq) != f.standing.outcome]
            for f in moved:
                await self.tell_clients(ChangeOutcome.model_validate(f.as_json()), school_id)
            await outcomes.checked(self.store.pool, found, moved)
            told += len(moved)
        return told

    async def tell_clients(self, message: ReportReady | ChangeOutcome, school_id: str) -> None:
        await publish(self.clients or self.broker, self.keyring, message, self.topics.outcomes, key=school_id.encode())

    async def unchanged(self, school_id: str, snapshot_id: str, twin: str) -> None:
        """The last word of an upload identical to its device's latest snapshot ``twin``: that
        snapshot's report (where the school stands), naming both. Before ``twin`` has a report
        of its own, its progress so far (phase ``unchanged``, not ok: ``twin`` is still on its way)."""
        report = await self.store.report_of(school_id, twin)
        if report is None:
            report = school_report(
                school_id=school_id,
                snapshot_id=twin,
                phase="unchanged",
                counts=await record_counts(self.store.pool, school_id, twin) or {},
                quarantine=await quarantine_entries(self.store.pool, school_id, twin),
                validation=None,
            )
        why = f"identical to snapshot {twin}, its device's latest: nothing new to migrate"
        report |= {"snapshot_id": snapshot_id, "unchanged_of": twin, "unchanged": why}
        await self.store.save_report(school_id, snapshot_id, report)
        await self.report_ready(
            ReportReady(school_id=school_id, snapshot_id=snapshot_id, phase=str(report["phase"]), reason="unchanged", message=why)
        )
        log.info("%s: snapshot %s unchanged (as %s)", school_id, snapshot_id, twin)

    async def override_audit(self, school_id: str, snapshot_id: str | None, actor: str, reason: str) -> str:
        snapshot_id = snapshot_id or (await self.store.phase_of(school_id))[1]
        if snapshot_id is None:
            return "refused: no snapshot to override; give --snapshot"
        await self.store.save_override(school_id, snapshot_id, actor, reason)
        blocked = await self.store.blocked(school_id, snapshot_id)
        if blocked is None:
            return f"override recorded for snapshot {snapshot_id}: its audit gate will let it pass"
        await self.advance(blocked)
        return f"override recorded: snapshot {snapshot_id} goes on"

    async def report(
        self,
        school_id: str,
        snapshot_id: str,
        phase: Phase,
        *,
        validation: dict[str, Any] | None = None,
        blocked: str | None = None,
    ) -> None:
        counts = await record_counts(self.store.pool, school_id, snapshot_id) or {}
        report = school_report(
            school_id=school_id,
            snapshot_id=snapshot_id,
            phase=phase.value,
            counts=counts,
            quarantine=await quarantine_entries(self.store.pool, school_id, snapshot_id),
            validation=validation,
            blocked=blocked,
        )
        if deleted := await self.store.deleted_counts(school_id):  # gone from a newer snapshot: rows kept, marked
            report["deleted"] = deleted
        if disagreed := await self.store.device_conflicts(school_id):  # devices that disagree: the greater version won
            report["device_conflicts"] = disagreed
        await self.store.save_report(school_id, snapshot_id, report)
        await self.report_ready(
            ReportReady(
                school_id=school_id,
                snapshot_id=snapshot_id,
                phase=phase.value,
                reason="audit_blocked" if blocked else None,
                message=blocked,
            )
        )
        log.info("%s: report ready (%s)", school_id, phase.value)

    async def start_cutover(self, school_id: str, actor: str, reason: str) -> str:
        begun = await self.store.begin_cutover(school_id, actor, reason)
        if isinstance(begun, str):
            return begun
        self.moved(school_id, Phase.CUTOVER)
        if not await self.launch(begun):  # another replica took it first: it runs it
            return f"cutover {begun.attempt_id} started (by another coordinator)"
        return f"cutover {begun.attempt_id} started"

    async def launch(self, attempt: Attempt) -> bool:
        """Run the attempt here if this replica can take the school's cutover lease (False:
        another coordinator runs it). The lease is held until the attempt ends here."""
        school_id = attempt.school_id
        if school_id in self.running or school_id in self._launching:
            return True
        self._launching.add(school_id)  # before the first await: one launch per school in this process
        try:
            assert self.settings.database_url
            lease = Lease(self.settings.database_url, named(self.settings.topic_prefix, f"cutover:{school_id}"))
            if not await lease.held():
                await lease.release()
                return False
            self.leases[school_id] = lease
            self.running[school_id] = asyncio.create_task(self._run(attempt, lease), name=f"cutover {school_id}")
            return True
        finally:
            self._launching.discard(school_id)

    async def _run(self, attempt: Attempt, lease: Lease) -> bool:
        try:
            # Claimed under the lease, with the step as the claim found it: a runner before
            # this one may have moved on (or begun a rollback) until the moment of the claim.
            current = await self.store.claim_attempt(attempt)
            if current is None:
                return False  # it ended meanwhile
            phase, _ = await self.store.phase_of(current.school_id)
            if current.last_step == ROLLING_BACK:  # a rollback stopped half-way: finish it, never the cutover
                await self.finish_rollback(current, await self.store.attempt_error(current) or "rollback: resumed")
                return False
            if phase is Phase.COMPLETED:  # finished, but the attempt was not closed
                await self.store.end_cutover(current, Phase.COMPLETED, "completed", actor=self.actor, reason="closed")
                return True
            if phase is not Phase.CUTOVER:
                await self.store.end_cutover(
                    current,
                    Phase.ROLLED_BACK,
                    "rolled_back",
                    actor=self.actor,
                    reason="closed",
                    error=f"the school left cutover ({phase})",
                )
                return False
            return await run_cutover(self, current)
        except LeaseLost:
            log.warning("%s: cutover lease lost; the coordinator holding it goes on", attempt.school_id)
            return False
        except Exception:  # left running in the database: resumed from its last step (``resume``)
            log.exception("%s: cutover %s stopped; it is resumed from its last step", attempt.school_id, attempt.attempt_id)
            self.resume_after[attempt.school_id] = time.monotonic() + 5.0
            return False
        finally:
            self.running.pop(attempt.school_id, None)
            if self.leases.get(attempt.school_id) is lease:
                self.leases.pop(attempt.school_id, None)
            await lease.release()

    async def resume(self) -> None:
        """Every cutover left running (a coordinator restarted, died, or lost its lease) goes
        on from its next step, here if this replica can take its lease. Called at start and
        by the leader every sync round."""
        for attempt in await self.store.running_attempts():
            if attempt.school_id in self.running or self.resume_after.get(attempt.school_id, 0.0) > time.monotonic():
                continue
            if await self.launch(attempt):
                log.info("%s: resuming cutover %s after step %s", attempt.school_id, attempt.attempt_id, attempt.last_step)

    async def redrive(self, school_id: str, snapshot_id: str | None, actor: str, reason: str) -> str:
        """Have ingest fan the school's snapshot out again from its verified backup (``Redrive``):
        what a lost broker held in flight comes again; what had arrived is written the same."""
        current, snapshot = await self.store.phase_of(school_id)
        snapshot_id = snapshot_id or snapshot
        if snapshot_id is None:
            return "refused: no snapshot of this school"
        if current not in (Phase.DUAL_WRITE, Phase.SYNCED, Phase.VALIDATED, Phase.ROLLED_BACK):
            return f"refused: the school is {current.value if current else 'unknown'} (a re-drive fills the tables of a school still migrating)"
        request = Redrive(school_id=school_id, snapshot_id=snapshot_id, reason=f"{reason} ({actor})", issued_at=datetime.now(UTC))
        await publish(self.broker, self.keyring, request, self.topics.ingest, key=school_id.encode())
        self.metrics.errors.add(1, {"category": "transient", "where": "redrive"})
        log.warning(
            "%s: re-drive %s of snapshot %s requested by %s: %s", school_id, request.redrive_id, snapshot_id, actor, reason
        )
        return f"re-drive {request.redrive_id} of snapshot {snapshot_id} requested ({current.value if current else 'unknown'})"

    async def map_key(self, school_id: str, snapshot_id: str | None, aliases: dict[str, Domain], actor: str, reason: str) -> str:
        """An operator maps keys of the snapshot waiting at the audit gate, each to a domain, for
        this school: ingest audits and releases it again reading them (``Redrive.key_aliases``);
        its new audit records the mapping, who and why, and the gate judges that audit."""
        snapshot_id = snapshot_id or (await self.store.phase_of(school_id))[1]
        blocked = await self.store.blocked(school_id, snapshot_id) if snapshot_id else None
        if snapshot_id is None or blocked is None:
            return (
                f"refused: no snapshot of {school_id} waits at the audit gate"
                f"{f' as {snapshot_id}' if snapshot_id else ''} (map keys for every school with SCHOOLMIG_KEY_ALIASES)"
            )
        if not aliases:
            return "refused: give KEY=DOMAIN, e.g. attendanceRecords=attendance"
        if unknown := sorted(set(aliases) - set(blocked.audit.unmapped_keys)):
            held = ", ".join(sorted(blocked.audit.unmapped_keys)) or "none"
            return (
                f"refused: snapshot {snapshot_id} has no unmapped records under {', '.join(unknown)} (its unmapped keys: {held})"
            )
        request = Redrive(
            school_id=school_id,
            snapshot_id=snapshot_id,
            reason=f"map-key by {actor}: {reason}",
            key_aliases=aliases,
            issued_at=datetime.now(UTC),
        )
        await publish(self.broker, self.keyring, request, self.topics.ingest, key=school_id.encode())
        mapping = ", ".join(f"{k}={d.value}" for k, d in sorted(aliases.items()))
        log.warning("%s: snapshot %s: keys mapped by %s (%s): %s", school_id, snapshot_id, actor, mapping, reason)
        return f"mapping {mapping} sent: snapshot {snapshot_id} is audited and released again with it"

    async def hand_back(self, records: list[MappedRecord]) -> None:
        """Hand parked records back to the loader (it writes them and un-parks them), as rows
        batches within the usual bounds."""
        groups: dict[tuple[str, str, Domain, datetime], list[MappedRecord]] = {}
        for r in records:
            groups.setdefault((r.school_id, r.snapshot_id, r.domain, r.source_ts), []).append(r)
        for (school_id, snapshot_id, domain, source_ts), group in groups.items():
            head = header("rows.batch", school_id, snapshot_id, domain, source_ts)
            entries = [rows_entry(r.index, r.legacy_id, r.rows, change=r.change) for r in group]
            limits = {"max_records": self.settings.batch_records, "max_bytes": self.settings.batch_bytes}
            for body, _ in pack(head, entries, **limits):
                await publish(self.broker, self.keyring, body, self.topics.rows(domain), key=batch_key(school_id, domain))

    async def accept_conflicts(self, school_id: str, records: list[str], actor: str, reason: str) -> str:
        """An operator accepts writes in quarantine for a conflict of the data (DOMAIN/ID each),
        with a reason: they no longer block the school, which is validated again (:meth:`replay`)."""
        wanted = [(domain, legacy_id) for domain, _, legacy_id in (r.partition("/") for r in records)]
        if not wanted:
            return "refused: name the conflicts to accept, as DOMAIN/ID (schoolmig status --json lists them)"
        accepted = await quarantine.accept_conflicts(self.store.pool, school_id, wanted, actor, reason)
        if not accepted:
            return f"refused: {school_id} has no write in quarantine for a data conflict among {', '.join(records)}"
        named = ", ".join(f"{d}/{i}" for d, i in accepted)
        log.warning("%s: data conflicts accepted by %s: %s (%s)", school_id, actor, named, reason)
        missing = sorted(set(records) - {f"{d}/{i}" for d, i in accepted})
        again = await self.replay(school_id, actor, f"conflicts accepted: {reason}")
        return f"accepted {named}" + (f" (no data conflict: {', '.join(missing)})" if missing else "") + f"; {again}"

    async def set_timezone(self, school_id: str, zone: str, actor: str, reason: str) -> str:
        """The school's time zone, set by an operator (``shared.catalog.timezones``): before any of its
        records were mapped, or again to the zone they were mapped in."""
        held = await self.store.set_zone(school_id, zone, actor, reason)
        if held is not None:
            return (
                f"refused: {school_id}'s records were mapped in {held} already; another zone would need them mapped "
                f"again, which schoolmig does not do (the zone of a school is set before its first snapshot)"
            )
        log.warning("%s: time zone set to %s by %s (%s)", school_id, zone, actor, reason)
        return f"{school_id}'s time zone is {zone}: its dates are read in it"

    async def replay(self, school_id: str, actor: str, reason: str) -> str:
        """The school's sync is checked again: back to dual write, so the sync check tries the
        writes held for a conflict again (those whose value or parent is free now are written,
        their quarantine entries withdrawn), then validates (a fix the client sent, or an
        acceptance, counts from then on)."""
        current, snapshot_id = await self.store.phase_of(school_id)
        if current not in (Phase.SYNCED, Phase.VALIDATED) or snapshot_id is None:
            return f"refused: the school is {current.value if current else 'unknown'} (a replay checks a synced school again)"
        try:
            await self.store.transition(
                school_id, snapshot_id, Phase.DUAL_WRITE, actor=actor, expect=current, reason=f"replay: {reason}"
            )
        except IllegalTransition:
            return f"refused: {school_id} moved on meanwhile; ask again"
        await self.phase_changed(school_id, Phase.DUAL_WRITE, "replay")
        return f"{school_id} checked again: held writes tried, then validated (schoolmig status)"

    async def rollback(self, school_id: str, actor: str, reason: str) -> str:
        phase, snapshot_id = await self.store.phase_of(school_id)
        if phase is Phase.CUTOVER or school_id in self.running or await self.store.running_attempt(school_id):
            return "refused: a cutover is running; it rolls back by itself if a step fails"
        if phase is Phase.COMPLETED:
            # The school's data lives in the tables now: going back to the browser is lossless
            # only with a file rebuilt from them after the cutover, and proven whole.
            export = await self.store.verified_export_since(school_id, await self.store.entered_at(school_id, Phase.COMPLETED))
            if export is None:
                return (
                    "refused: the school runs on the API; export its data first and verify it "
                    f"(schoolmig export --school {school_id} --verify), then load that file in the app"
                )
            reason = f"{reason} (the app loads export {export['export_id']}, sha256 {export['sha256'][:12]}, verified as {export['verified_with']})"
        try:  # (``expect``: a cutover begun since the phase was read makes this refuse)
            await self.store.transition(school_id, snapshot_id or "", Phase.ROLLED_BACK, actor=actor, reason=reason, expect=phase)
        except IllegalTransition as exc:
            return f"refused: {exc}"
        self.moved(school_id, Phase.ROLLED_BACK)
        await self.set_mode(school_id, Mode.LOCAL_STORAGE, False, f"rolled back by {actor}: {reason}")
        return f"rolled back from {phase.value if phase else 'unknown'}: clients use localStorage"

    async def phase_changed(self, school_id: str, phase: Phase, reason: str) -> None:
        """Publish the mode that goes with a phase (entering dual write: hybrid), and its reason
        whenever that moves: the mode a client reads says why it is what it is now."""
        self.moved(school_id, phase)
        current = await self.store.mode_of(school_id)
        mode = MODE_OF_PHASE[phase]
        if current is None or current.mode is not mode or (current.reason != reason and not current.maintenance):
            await self.set_mode(school_id, mode, False, reason)

    def moved(self, school_id: str, phase: Phase) -> None:
        """What every phase move tells the metrics: one more transition, the current phase."""
        self.metrics.phase_transitions.add(1, {"phase": phase.value})
        gauge_phase(self.metrics, school_id, phase)

    async def validate(self, school_id: str, snapshot_id: str | None, run_id: str) -> str:
        """An operator's validation run (``schoolmig validate``), of the school's snapshot unless
        one is named; its result is stored under ``operator_run_id(run_id)`` and only stored:
        the school's phase, report and alerts go by its own sync's runs."""
        snapshot_id = snapshot_id or (await self.store.phase_of(school_id))[1]
        if snapshot_id is None:
            return f"refused: {school_id} has no snapshot to validate"
        await self.request_validation(school_id, snapshot_id, run_id=operator_run_id(run_id))
        return f"validation {operator_run_id(run_id)} of {snapshot_id} requested"

    async def request_validation(
        self, school_id: str, snapshot_id: str, changes_until: datetime | None = None, *, run_id: str | None = None
    ) -> str:
        """Ask the validator for a run; its result lands in ``migration.validation_runs``."""
        request = self.validation_request(school_id, snapshot_id, changes_until, run_id=run_id)
        await self.store.new_validation_run(run_id_of(request), school_id, snapshot_id)
        await publish(self.broker, self.keyring, request.message, request.topic, key=request.key)
        return run_id_of(request)

    def validation_request(
        self, school_id: str, snapshot_id: str, changes_until: datetime | None = None, *, run_id: str | None = None
    ) -> Outbound:
        """The command that asks for a validation run (to publish, or to write to the outbox with
        the step that needs it). ``changes_until``: when the barrier that proved the sync was
        sent (changes after it are not compared)."""
        run_id = run_id or str(uuid.uuid4())
        command = ValidationRequested(run_id=run_id, school_id=school_id, snapshot_id=snapshot_id, changes_until=changes_until)
        return Outbound(self.topics.validate_commands, school_id.encode(), command)

    async def drain(self) -> None:
        """Publish what a step (this one's, or one a stopped coordinator reached) left in the outbox."""
        await outbox.flush(self.store.pool, self.broker, self.keyring, self.store.outbox)

    # ------------------------------------------------------------------ CutoverPorts

    async def set_mode(
        self,
        school_id: str,
        mode: Mode,
        maintenance: bool,
        reason: str,
        attempt: Attempt | None = None,
        *,
        clear_local: bool = False,
        expect: tuple[Phase, Mode] | None = None,
    ) -> bool:
        """The clients' mode: stored (the truth ingest and the HTTP API read) and announced on
        the control topic before the store commits. A cutover's is written under its epoch,
        with the attempt's row held until the announcement is acknowledged: a runner taking
        the attempt over waits for it, so a stale runner's announcement never follows the
        new runner's (the compacted topic keeps the last one). An announcement that fails
        undoes the write (the step is tried again)."""
        written = await self.store.set_mode(
            school_id, mode, maintenance, reason, attempt, announce=self.announce, clear_local=clear_local, expect=expect
        )
        if written is None:
            return False
        log.info("%s: mode %s%s", school_id, mode.value, " (maintenance)" if maintenance else "")
        return True

    async def release_local_copies(self) -> list[str]:
        """The plan's last step: schools whose cutover has stood ``SCHOOLMIG_LOCAL_GRACE_S``
        without rollback are told (their mode's ``clear_local``) that each client may archive
        its local copy to a file and clear it; each client says so (``local.cleared``)."""
        told = []
        grace = self.settings.local_grace_s
        for school_id in await self.store.past_grace(grace):
            if await self.set_mode(
                school_id,
                Mode.API,
                False,
                f"the cutover stood {grace / 86400:g} day(s) without rollback: clients archive their local copy and clear it",
                clear_local=True,
                expect=(Phase.COMPLETED, Mode.API),  # a rollback meanwhile wins
            ):
                told.append(school_id)
        return told

    async def announce_modes(self) -> int:
        """Every school's stored mode announced again (control topic and events), as it is:
        what clients read after a broker lost the compacted topic. Returns how many."""
        announced = 0
        for school in await self.store.schools():
            announced += await self.store.announce_mode(school["school_id"], self.announce)
        return announced

    async def announce(self, record: SchoolMode) -> None:
        """A school's mode on the control topic (what its clients read) and on the events topic."""
        key = record.school_id.encode()
        await publish(self.clients or self.broker, self.keyring, record, self.topics.control, key=key)
        await publish(self.broker, self.keyring, record, self.topics.events, key=key)

    async def send_barrier(self, school_id: str, snapshot_id: str | None = None) -> tuple[str, int]:
        """A barrier to every ingest partition (``shared.wire.barrier``); returns (its id, the acks it needs)."""
        assert self.settings.kafka_bootstrap_servers
        topics = self.topics
        names = [topics.ingest, *topics.raw_topics, *topics.rows_topics, topics.quarantine]
        counts = await partition_counts(self.settings.kafka_bootstrap_servers, names)
        barrier_id = str(uuid.uuid4())
        expected = expected_acks(topics, counts)
        await self.store.new_barrier(barrier_id, school_id, expected, snapshot_id)
        for partition in range(counts[topics.ingest]):
            barrier = Barrier(barrier_id=barrier_id, school_id=school_id, topic=topics.ingest, partition=partition)
            await publish(self.broker, self.keyring, barrier, topics.ingest, partition=partition, key=school_id.encode())
        return barrier_id, expected

    async def sync_barrier(self, school_id: str) -> str:
        started = time.monotonic()
        barrier_id, expected = await self.send_barrier(school_id)
        while (acked := await self.store.barrier_acks(barrier_id)) < expected:
            if time.monotonic() - started > self.settings.barrier_timeout_s:
                raise CutoverFailed(
                    f"final sync: barrier {barrier_id} acknowledged on {acked} of {expected} paths "
                    f"after {self.settings.barrier_timeout_s:.0f}s"
                )
            await asyncio.sleep(self.settings.sync_poll_interval_s)
        # Every change before the barrier is written, or waits: a write still waiting for a
        # unique value another record holds (or a change's parent) is a conflict of the data,
        # quarantined naming the holder, for the final validation to report.
        _, snapshot_id = await self.store.phase_of(school_id)
        if snapshot_id is not None:
            swept = await self.store.sweep_parked(school_id, snapshot_id, redrive_after_s=0.0)
            if swept.orphans:
                log.warning("%s: final sync: %d write(s) held for a conflict of the data", school_id, swept.orphans)
            if swept.redrive:  # free now (their holder let go): written before the final validation's cut
                await self.hand_back(swept.redrive)
                log.warning("%s: final sync: %d held write(s) whose values are free re-driven", school_id, len(swept.redrive))
        return f"barrier {barrier_id} acknowledged on all {expected} paths in {time.monotonic() - started:.1f}s"

    async def final_validation(self, school_id: str, snapshot_id: str) -> str:
        # The final sync's barrier is the cut: every change before it is written.
        run_id = await self.request_validation(school_id, snapshot_id, await self.store.last_passed_barrier(school_id))
        started = time.monotonic()
        while (result := await validation(self.store.pool, run_id)) is None:
            if time.monotonic() - started > self.settings.validation_timeout_s:
                raise CutoverFailed(f"final validation {run_id} gave no result in {self.settings.validation_timeout_s:.0f}s")
            await asyncio.sleep(self.settings.sync_poll_interval_s)
        critical = sum(1 for d in result.domains for i in d.issues if i.severity == "critical")
        if not result.ok:
            self.metrics.errors.add(critical or 1, {"category": "consistency", "where": "final validation"})
            raise CutoverFailed(f"final validation {run_id} found {critical} critical issue(s)")
        return f"final validation {run_id}: no critical issue"

    async def health_check(self, school_id: str, snapshot_id: str) -> str:
        """The database answers, and holds as many live records per domain as the validation saw valid."""
        run = await latest_passing(self.store.pool, school_id, snapshot_id)
        if run is None:
            raise CutoverFailed("health check: no validation on record")
        # A change that reached ingest after the final sync's barrier (sent before the client
        # saw the maintenance) is in the tables but was not validated: it may move a count by one.
        late = await self.store.changed_since(school_id, await self.store.last_passed_barrier(school_id))
        for domain in Domain:
            held = await self.store.records_held(school_id, domain)
            valid = run.get(domain.value, 0)
            if abs(held - valid) > late.get(domain.value, 0):
                raise CutoverFailed(f"health check: {domain.value} holds {held} records, validation saw {valid} valid")
        return "database reachable; every domain holds the validated count" + (
            f" (give or take {sum(late.values())} record(s) changed after the final sync)" if late else ""
        )

    async def fence(self, attempt: Attempt) -> None:
        lease = self.leases.get(attempt.school_id)
        if lease is None or not await lease.held():
            raise LeaseLost(f"{attempt.school_id}: this coordinator no longer holds the cutover lease")

    async def pause(self, tries: int) -> None:
        await asyncio.sleep(transient_delay(tries + 1))

    async def set_attempt_mode(self, attempt: Attempt, mode: Mode, maintenance: bool, reason: str) -> None:
        await self.set_mode(attempt.school_id, mode, maintenance, reason, attempt)

    async def step_done(self, attempt: Attempt, step: str, evidence: str) -> None:
        await self.store.step_done(attempt, step)
        log.info("%s: cutover step %s done: %s", attempt.school_id, step, evidence)

    async def finish(self, attempt: Attempt, evidence: str) -> None:
        if await self.store.end_cutover(attempt, Phase.COMPLETED, "completed", actor=self.actor, reason=evidence):
            self.moved(attempt.school_id, Phase.COMPLETED)
            log.info("%s: cutover completed", attempt.school_id)

    async def roll_back(self, attempt: Attempt, step: str, why: str) -> None:
        """Marked first (a coordinator resuming it finishes the rollback, never the cutover),
        then the clients' mode (idempotent), then the phase and the attempt, in one go."""
        await self.store.mark_rolling_back(attempt, f"{step}: {why}")
        await self.finish_rollback(attempt, f"{step}: {why}")

    async def finish_rollback(self, attempt: Attempt, error: str) -> None:
        """The rest of a rollback marked on the attempt (``error``: the step and why, as marked)."""
        await self.set_attempt_mode(attempt, Mode.HYBRID, False, f"cutover rolled back at {error}")
        if await self.store.end_cutover(
            attempt, Phase.ROLLED_BACK, "rolled_back", actor=self.actor, reason=f"cutover failed at {error}", error=error
        ):
            self.metrics.errors.add(1, {"category": "critical", "where": f"cutover {error.split(':', 1)[0]}"})
            self.moved(attempt.school_id, Phase.ROLLED_BACK)
            log.warning("%s: cutover rolled back at %s", attempt.school_id, error)


def run_id_of(request: Outbound) -> str:
    assert isinstance(request.message, ValidationRequested)
    return request.message.run_id
