"""Ingest's door: every message on the public ingest topic is taken, refused with an
answer, or dead-lettered with its reason. Nothing here crashes on input.

A manifest or chunk is stored (bounded: size, candidates per chunk, the manifest's hashes)
and the release is tried (``services.ingest.release``); a changes message is kept and sent
on; the coordinator's signed barriers and re-drive requests are acted on, anyone else's
refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from faststream.kafka import KafkaMessage

from services.ingest.changes import change_batches, plan_changes, without
from services.ingest.envelope import Rejection, Sender, read_envelope, sender_of
from services.ingest.ports import Ports, record_of
from services.ingest.release import Release
from shared.failures.policy import Unusable
from shared.platform.signing import stale_age
from shared.platform.telemetry import count_refused
from shared.wire import chunks
from shared.wire.barrier import forward, partition_counts
from shared.wire.batching import encode, signed_by, unreadable
from shared.wire.messages import (
    Barrier,
    ChangeBatch,
    LocalCleared,
    Mode,
    Redrive,
    SchoolRejected,
    SnapshotManifest,
    change_id,
)

log = logging.getLogger("schoolmig.ingest")
#: Chunks of one index kept before the manifest says which is right (a client resending
#: after a fix is two; a flood of wrong ones is refused, never stored).
MAX_CHUNK_CANDIDATES = 3


@dataclass(kw_only=True)
class Intake(Ports):
    """What comes in on the ingest topic, message by message."""

    release: Release

    async def take(self, body: bytes, message: KafkaMessage) -> None:
        if (why := unreadable(message.raw_message)) is not None:
            await self.dead_letter(message, body, "unreadable_record", why)
            return
        # Only the coordinator's (signed) barriers and re-drive requests count: a forged barrier
        # would prove a sync that did not happen, a forged request would make ingest do work.
        barrier = _barrier(body) if b'"barrier"' in body[:64] else None
        redrive = _redrive(body) if barrier is None and b'"redrive"' in body[:64] else None
        asked = barrier is not None or redrive is not None
        if asked and isinstance(unusable := signed_by(message.raw_message, body, self.keyring), Unusable):
            await self.dead_letter(message, body, unusable.reason, unusable.detail, tell=False)
            count_refused(unusable.reason, topic_of(message))
            return
        if barrier is not None:
            await self.forward_barrier(barrier)
            return
        if redrive is not None:
            if (age := stale_age(redrive.issued_at, self.settings.command_ttl_s, self.settings.max_clock_ahead_s)) is not None:
                await self.dead_letter(
                    message,
                    body,
                    "stale_command",
                    f"a re-drive request asked {age:.0f}s ago (it must be "
                    f"within SCHOOLMIG_COMMAND_TTL_S, {self.settings.command_ttl_s:.0f}s, and not ahead of this "
                    f"clock by more than SCHOOLMIG_MAX_CLOCK_AHEAD_S)",
                    tell=False,
                )
                count_refused("stale_command", topic_of(message))
                return
            await self.release.again(redrive)
            return
        envelope = read_envelope(body)
        if isinstance(envelope, Rejection):
            await self.dead_letter(message, body, envelope.reason, envelope.message, errors=envelope.errors)
            return
        if isinstance(envelope, ChangeBatch):
            await self.changes(envelope, body, message)
            return
        if isinstance(envelope, LocalCleared):  # the plan's last step, reported by a device
            if (why := await self.store.local_cleared(envelope)) is not None:
                detail = {
                    "not_asked": f"school {envelope.school_id}'s mode does not ask its clients to clear their local copy "
                    "(clear_local), or no longer as announced then (announced_at)",
                    "unknown_device": f"no snapshot or change of school {envelope.school_id} came from client "
                    f"{envelope.client_id}",
                }[why]
                await self.dead_letter(message, body, f"clear_{why}", f"{detail}: not recorded")
            return
        settled = await self.store.settled(envelope.school_id, envelope.snapshot_id)
        if settled == "released":
            return  # the same snapshot again: released once already
        if isinstance(envelope, SnapshotManifest) and (why := self._too_large(envelope)) is not None:
            await self.dead_letter(message, body, "snapshot_too_large", why)  # first: a crash before the mark sends it again
            await self.store.refuse(envelope.school_id, envelope.snapshot_id, "snapshot_too_large")  # and drops its chunks
            await self.event(
                SchoolRejected(
                    school_id=envelope.school_id, snapshot_id=envelope.snapshot_id, reason="snapshot_too_large", message=why
                ),
                envelope.school_id,
            )
            return
        if settled == "refused":
            if isinstance(envelope, SnapshotManifest):  # within the limit now (it was raised): taken after all
                await self.store.unrefuse(envelope.school_id, envelope.snapshot_id)
            else:  # its manifest was dead-lettered with the reason; its chunks are not kept
                log.warning("chunk of refused snapshot %s/%s dropped", envelope.school_id, envelope.snapshot_id)
                self.metrics.ingest_rejected.add(1, {"reason": "chunk_of_refused_snapshot"})
                await self.tell_refused(  # answered, not kept: a refused snapshot's chunks would flood the dead letter
                    message,
                    "chunk_of_refused_snapshot",
                    f"snapshot {envelope.snapshot_id} was refused (see its report.ready): its chunks are not kept",
                    sender_of(body, None),
                )
                return
        if (refusal := _refusal(*await self.store.mode_of(envelope.school_id))) is not None:
            await self.dead_letter(message, body, *refusal)  # kept, never half-applied
            if isinstance(envelope, SnapshotManifest):
                await self.event(
                    SchoolRejected(
                        school_id=envelope.school_id, snapshot_id=envelope.snapshot_id, reason=refusal[0], message=refusal[1]
                    ),
                    envelope.school_id,
                )
            return
        if isinstance(envelope, SnapshotManifest):
            await self.store.save_manifest(envelope)
        else:
            data = chunks.decode(envelope.data_b64)
            # What is stored never outgrows what the manifest announced (or the limit before it
            # came): chunks cannot smuggle a larger snapshot in than the size check let through.
            digest = chunks.sha256_hex(data)
            announced, stored, expected, rivals = await self.store.stored_bytes(
                envelope.school_id, envelope.snapshot_id, envelope.index, digest
            )
            # Once the manifest is here, a chunk it does not name is never stored (before it, every
            # candidate is kept and assembly takes the one whose hash the manifest names).
            if announced is not None and expected is None:
                await self.dead_letter(
                    message, body, "invalid_chunk", f"chunk {envelope.index} is past its manifest's chunk_count"
                )
                return
            if expected is not None and digest != expected:
                await self.dead_letter(
                    message, body, "chunk_hash_mismatch", f"chunk {envelope.index}'s SHA-256 is not the one its manifest names"
                )
                return
            if announced is None and rivals >= MAX_CHUNK_CANDIDATES:  # before the manifest: a few candidates, not a flood
                await self.dead_letter(
                    message,
                    body,
                    "too_many_candidates",
                    f"chunk {envelope.index} already has {rivals} other candidates waiting for the manifest",
                )
                return
            allowed = min(
                self.settings.max_snapshot_bytes, announced if announced is not None else self.settings.max_snapshot_bytes
            )
            if stored + len(data) > allowed:
                why = f"its chunks come to more than {allowed} bytes (announced, or SCHOOLMIG_MAX_SNAPSHOT_BYTES)"
                await self.dead_letter(message, body, "snapshot_too_large", why)
                await self.store.refuse(envelope.school_id, envelope.snapshot_id, "snapshot_too_large")
                return
            await self.store.save_chunk(envelope, data, digest)
        await self.release.if_complete(envelope.school_id, envelope.snapshot_id, message)

    async def changes(self, batch: ChangeBatch, body: bytes, message: KafkaMessage) -> None:
        """Keep the changes (``migration.changes``), then send them on like a snapshot's records.

        Taken in every mode but ``api``: in maintenance the client holds its writes, and what it
        sent before it saw the maintenance must still land (the cutover's barrier comes after it
        on the partition). Once the school runs on the API, a browser's change is refused: it is
        kept in the dead letter, and the school is told (``school.rejected``)."""
        mode, _ = await self.store.mode_of(batch.school_id)
        if mode is Mode.API:
            why = "the school runs on the API now: a browser's change would be lost to it; write through the API"
            await self.dead_letter(message, body, "school_cut_over", why)
            first = batch.changes[0]
            await self.event(
                SchoolRejected(
                    school_id=batch.school_id,
                    snapshot_id=change_id(batch.client_id, first.seq),
                    reason="school_cut_over",
                    message=why,
                ),
                batch.school_id,
            )
            return
        plan = plan_changes(
            batch, max_depth=self.settings.max_nesting_depth, now=datetime.now(UTC), max_ahead_s=self.settings.max_clock_ahead_s
        )
        reused = await self.store.save_changes(batch, plan.accepted)
        for position in sorted(reused):  # kept, never applied: which of the two is right is the client's to say
            change = batch.changes[position]
            await self.dead_letter(
                message,
                encode(change.model_dump(mode="json")),
                "conflicting_change",
                f"change {change_id(batch.client_id, change.seq)} was received before with other content",
                about=Sender(batch.school_id, "changes", None, batch.client_id, [change.seq]),
            )
        plan = without(plan, reused)
        default_ts = await self.store.school_default_ts(batch.school_id, min(c.source_ts for c in batch.changes))
        # The school's zone is fixed by the first write mapped: a message whose changes all went
        # elsewhere (reused, refused) maps nothing and fixes nothing.
        zone = (
            await self.store.school_zone(batch.school_id, batch.timezone, batch.client_id, self.settings.default_timezone)
            if plan.accepted
            else None
        )
        await self.publish_wires(
            change_batches(
                batch,
                plan,
                default_ts=default_ts,
                timezone=zone.name if zone is not None else self.settings.default_timezone,
                max_records=self.settings.batch_records,
                max_bytes=self.settings.batch_bytes,
            )
        )
        for change in batch.changes:
            self.metrics.changes_received.add(1, {"op": change.op.value, "domain": change.domain.value})

    async def forward_barrier(self, barrier: Barrier) -> None:
        """Every message before the barrier on this partition is fanned out: pass it on."""
        targets = [*self.topics.raw_topics, self.topics.quarantine]
        assert self.settings.kafka_bootstrap_servers
        await forward(
            self.broker, self.keyring, barrier, targets, await partition_counts(self.settings.kafka_bootstrap_servers, targets)
        )

    def _too_large(self, manifest: SnapshotManifest) -> str | None:
        """Why a manifest announces more than ingest may hold (it assembles a whole snapshot in memory)."""
        limit = self.settings.max_snapshot_bytes
        if manifest.size_bytes > limit:
            return f"the snapshot is {manifest.size_bytes} bytes; the limit is {limit} (SCHOOLMIG_MAX_SNAPSHOT_BYTES)"
        return None


def _refusal(mode: Mode | None, maintenance: bool) -> tuple[str, str] | None:
    """Why a school's snapshot cannot be taken now, if it cannot."""
    if maintenance:
        return "school_in_maintenance", "the school is in maintenance (cutover in progress): its writes are held"
    if mode is Mode.API:
        return "school_cut_over", "the school runs on the API now: a browser snapshot would overwrite newer data"
    return None


def topic_of(message: KafkaMessage) -> str:
    """The topic of a message of this (single-message) subscriber."""
    return str(record_of(message).topic)


def _redrive(body: bytes) -> Redrive | None:
    try:
        return Redrive.model_validate_json(body)
    except ValueError:
        return None


def _barrier(body: bytes) -> Barrier | None:
    try:
        return Barrier.model_validate_json(body)
    except ValueError:
        return None  # not a barrier after all: read as an envelope (and dead-lettered if none)
