"""Ingest's release: a complete snapshot out to the pipeline, and again on a re-drive.

Its steps: assemble and parse → backup (PostgreSQL and a file) → audit → the school's
default time and zone → unchanged or superseded? → fan-out → marked released (its chunks
dropped) with the audit's event and the release's (or the withholding's) written to the
outbox in the same transaction → published. Releasing is idempotent: a snapshot already
marked released is not released again; a release cut short before the mark is done again
from the start when its last message is delivered again (every step before the mark writes
what it would write again the same way); one cut short after it has its events sent by the
next drain of the outbox (``shared.platform.outbox``), whichever replica runs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from faststream.kafka import KafkaMessage

from services.ingest.audit import Finding, audit_snapshot, summarise, zone_findings
from services.ingest.changes import change_batches, plan_changes
from services.ingest.envelope import Sender
from services.ingest.ports import Ports
from shared.catalog.timezones import SchoolZone
from shared.ledger.devices import held_records, readable_domains
from shared.platform.outbox import Outbound
from shared.source.backup_files import write_backup_file
from shared.source.snapshot import ParsedSnapshot, UnreadableSnapshot, parse_snapshot
from shared.wire import chunks
from shared.wire.fanout import audit_summary, plan_fanout
from shared.wire.messages import (
    AuditCompleted,
    AuditSummary,
    Redrive,
    SchoolRejected,
    Severity,
    SnapshotIncomplete,
    SnapshotManifest,
    SnapshotReleased,
    SnapshotWithheld,
)

log = logging.getLogger("schoolmig.ingest")
AUDIT_EVENT_FINDINGS = 500  # the event carries the first ones; all are in migration.audits


@dataclass(kw_only=True)
class Release(Ports):
    """The release steps, and a snapshot's re-drive from its verified backup."""

    async def if_complete(self, school_id: str, snapshot_id: str, message: KafkaMessage) -> None:
        state = await self.store.release_state(school_id, snapshot_id)
        manifest = state.manifest
        if manifest is None or state.released or state.chunks_received < manifest.chunk_count:
            return
        try:
            content = chunks.assemble(
                await self.store.chunks(school_id, snapshot_id),
                chunk_sha256=manifest.chunk_sha256,
                sha256=manifest.sha256,
                size_bytes=manifest.size_bytes,
            )
            parsed = parse_snapshot(
                content, manifest.format, aliases=self.settings.key_aliases, max_depth=self.settings.max_nesting_depth
            )
        except (chunks.AssemblyError, UnreadableSnapshot) as exc:
            reason = getattr(exc, "reason", "unreadable_snapshot")
            why = f"snapshot {school_id}/{snapshot_id} not released: {exc}"
            await self.dead_letter(message, b"", reason, why, about=Sender(school_id, "snapshot.manifest", snapshot_id))
            await self.store.refuse(school_id, snapshot_id, reason)  # never released: not reported incomplete later either
            await self.event(SchoolRejected(school_id=school_id, snapshot_id=snapshot_id, reason=reason, message=why), school_id)
            return
        path = await asyncio.to_thread(write_backup_file, self.settings.backups, school_id, snapshot_id, content, manifest.sha256)
        verified = await self.store.save_backup(manifest, content, str(path))
        twin = await self.store.unchanged_of(manifest)
        if twin is not None:
            # The same file its device sent last (a re-run, a second upload): no new work. Noted
            # before its audit is stored, so it is never taken for the school's newest audited one.
            await self.store.note_unchanged(school_id, snapshot_id, twin)
        zone = await self.store.school_zone(school_id, manifest.timezone, manifest.device_id, self.settings.default_timezone)
        summary, findings_json = audited(parsed, zone_findings(zone, await self.store.device_zones(school_id)), zone=zone)
        await self.store.save_audit(manifest, summary, findings_json)
        default_ts = await self.store.default_ts(school_id, snapshot_id, manifest.taken_at)
        withheld: tuple[Literal["superseded", "unchanged"], str] | None = None  # not fanned out, and why
        if twin is not None:
            withheld = ("unchanged", twin)
            log.info("snapshot %s/%s is identical to %s, its device's latest: unchanged", school_id, snapshot_id, twin)
        else:
            # Each record's version from its device's history (shared.ledger.devices), once.
            await self.derive_history(school_id, snapshot_id)
            derived = await self.store.derive(manifest, held_records(parsed), readable_domains(parsed))
            if derived.superseded_by is not None:
                # Read before its device's newest snapshot: that later reading of the same browser
                # holds what it still has. Kept (backup, audit), not fanned out; the coordinator notes it.
                await self.store.note_superseded(school_id, snapshot_id, derived.superseded_by)
                withheld = ("superseded", derived.superseded_by)
                log.warning(
                    "snapshot %s/%s was read before %s of its device: superseded, not fanned out",
                    school_id,
                    snapshot_id,
                    derived.superseded_by,
                )
            else:
                await self.publish_all(plan_fanout(parsed, manifest, derived.versions), manifest, default_ts, zone.name)
        # Marked released and its events written in one transaction, then published (the outbox).
        await self.store.mark_released(
            manifest, summary, self.announcement(manifest, summary, findings_json, verified, withheld=withheld)
        )
        await self.drain()
        self.metrics.snapshots_released.add(1, {"school_id": school_id})
        log.info(
            "released snapshot %s/%s: %d records, %d audit findings",
            school_id,
            snapshot_id,
            sum(summary.source_counts.values()),
            len(findings_json),
        )

    async def derive_history(self, school_id: str, before: str) -> None:
        """Devices whose snapshots were released before device histories existed: each one's
        newest released snapshot is derived first (from its verified backup, as it was loaded:
        every record at its read time), so the snapshot at hand is judged against what its
        devices held, not taken as every record's first write."""
        for older in await self.store.underived_history(school_id, before):
            found = await self.store.backup_of(school_id, older)
            if found is None:
                continue
            manifest, content, _, aliases = found
            parsed = parse_snapshot(content, manifest.format, aliases=aliases, max_depth=self.settings.max_nesting_depth)
            await self.store.derive(manifest, held_records(parsed), readable_domains(parsed), as_released=True)
            log.info(
                "%s: derived %s (device %r) from its backup: the device's history so far", school_id, older, manifest.device_id
            )

    def announcement(
        self,
        manifest: SnapshotManifest,
        summary: AuditSummary,
        findings: list[dict[str, object]],
        verified: bool,
        *,
        withheld: tuple[Literal["superseded", "unchanged"], str] | None = None,
    ) -> list[Outbound]:
        """The release's two events: the audit, then what the coordinator acts on: the snapshot
        released (fanned out), or ``withheld`` (superseded by, or unchanged as, another of its
        device). Written to the outbox with the step that makes them true."""
        audit = AuditCompleted(
            school_id=manifest.school_id,
            snapshot_id=manifest.snapshot_id,
            summary=summary,
            findings=findings[:AUDIT_EVENT_FINDINGS],
            findings_total=len(findings),
        )
        outcome: SnapshotWithheld | SnapshotReleased
        if withheld is not None:
            outcome = SnapshotWithheld(
                school_id=manifest.school_id,
                snapshot_id=manifest.snapshot_id,
                withheld=withheld[0],
                because_of=withheld[1],
                device_id=manifest.device_id,
            )
        else:
            outcome = SnapshotReleased(
                school_id=manifest.school_id,
                snapshot_id=manifest.snapshot_id,
                format=manifest.format,
                taken_at=manifest.taken_at,
                sha256=manifest.sha256,
                backup_verified=verified,
                audit=summary,
            )
        key = manifest.school_id.encode()
        return [Outbound(self.topics.events, key, audit), Outbound(self.topics.events, key, outcome)]

    async def again(self, redrive: Redrive) -> None:
        """The snapshot's records again, from its verified backup, unless a newer snapshot of the
        school was released since (its records would overwrite newer rows)."""
        found = await self.store.backup_of(redrive.school_id, redrive.snapshot_id)
        if found is None:
            log.warning(
                "re-drive %s of %s/%s: no verified backup of a released snapshot",
                redrive.redrive_id,
                redrive.school_id,
                redrive.snapshot_id,
            )
            return
        manifest, content, default_ts, aliases = found
        if (newer := await self.store.newer_released(redrive.school_id, redrive.snapshot_id, manifest.taken_at)) is not None:
            log.warning("re-drive of %s/%s skipped: %s of its device is newer", redrive.school_id, redrive.snapshot_id, newer)
            return
        aliases = aliases | redrive.key_aliases  # as released, and an operator's map-key on top
        parsed = parse_snapshot(content, manifest.format, aliases=aliases, max_depth=self.settings.max_nesting_depth)
        zone = await self.store.school_zone(
            redrive.school_id, None, manifest.device_id, self.settings.default_timezone
        )  # fixed by now
        if redrive.key_aliases:
            # Audited again with the mapping (recorded, with who and why): the release's audit is
            # the one accounting and the validator read from now on, so it is stored first.
            mapped = [
                Finding("operator_key_mapping", Severity.INFO, domain, field=key, detail=redrive.reason)
                for key, domain in sorted(redrive.key_aliases.items())
            ]
            summary, findings = audited(
                parsed, [*mapped, *zone_findings(zone, await self.store.device_zones(redrive.school_id))], zone=zone
            )
            await self.store.save_audit(manifest, summary, findings)
            await self.store.reaudit(manifest, summary)
            log.warning(
                "%s/%s audited again with %d key(s) mapped: %s",
                redrive.school_id,
                redrive.snapshot_id,
                len(mapped),
                redrive.reason,
            )
        # As its release sent them; with a key mapped, its records join its device's history.
        derived = await (
            self.store.extend_derivation(manifest, held_records(parsed))
            if redrive.key_aliases
            else self.store.derivation_of(redrive.school_id, redrive.snapshot_id)
        )
        if derived is None and await self.store.has_history(manifest.school_id, manifest.device_id):
            log.warning(
                "re-drive of %s/%s skipped: never derived (superseded by its device's later reading, or unchanged)",
                redrive.school_id,
                redrive.snapshot_id,
            )
            return
        versions = derived.versions if derived is not None else None
        await self.publish_all(plan_fanout(parsed, manifest, versions), manifest, default_ts or manifest.taken_at, zone.name)
        if redrive.key_aliases:  # the coordinator's gate sees the new audit
            await self.store.enqueue(self.announcement(manifest, summary, findings, verified=True))
            await self.drain()
        # The school's changes too: those lost in flight come again, the others are judged equal.
        resent = 0
        for batch in await self.store.stored_changes(redrive.school_id):
            plan = plan_changes(batch, max_depth=self.settings.max_nesting_depth)
            await self.publish_wires(
                change_batches(
                    batch,
                    plan,
                    default_ts=default_ts,
                    timezone=zone.name,
                    max_records=self.settings.batch_records,
                    max_bytes=self.settings.batch_bytes,
                )
            )
            resent += len(batch.changes)
        log.warning(
            "re-drove %s/%s from its verified backup, and %d change(s) (%s)",
            redrive.school_id,
            redrive.snapshot_id,
            resent,
            redrive.reason,
        )

    async def report_overdue(self) -> None:
        """Report, once each, snapshots still missing parts after the timeout."""
        for school_id, snapshot_id, expected, missing, age in await self.store.overdue(
            self.settings.incomplete_snapshot_timeout_s
        ):
            await self.event(
                SnapshotIncomplete(
                    school_id=school_id,
                    snapshot_id=snapshot_id,
                    manifest_received=expected is not None,
                    chunks_expected=expected,
                    missing_chunks=missing,
                    waited_s=round(age, 1),
                ),
                school_id,
            )
            await self.store.mark_incomplete(school_id, snapshot_id, missing)
            self.metrics.ingest_rejected.add(1, {"reason": "incomplete_snapshot"})
            log.warning(
                "snapshot %s/%s incomplete after %.0fs: missing %s",
                school_id,
                snapshot_id,
                age,
                "the manifest" if expected is None else f"chunks {missing}",
            )


def audited(
    parsed: ParsedSnapshot, extra: Iterable[Finding] = (), *, zone: SchoolZone
) -> tuple[AuditSummary, list[dict[str, object]]]:
    """The snapshot's audit: its summary (with the findings' counts and the zone its records
    are read in) and every finding."""
    findings = [*audit_snapshot(parsed), *extra]
    summary = audit_summary(parsed).model_copy(
        update={
            "findings": summarise(findings),
            "critical_findings": sum(f.severity is Severity.CRITICAL for f in findings),
            "timezone": zone.name,
            "timezone_source": zone.source.value,
        }
    )
    return summary, [f.as_json() for f in findings]
