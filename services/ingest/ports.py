"""What ingest's steps write to, in one object: its store, the topics it publishes on
(signed), the dead letter, and the answers its clients read.

:class:`services.ingest.intake.Intake` (what comes in) and
:class:`services.ingest.release.Release` (what goes out) are both built on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import BaseModel

from services.ingest.envelope import Sender, sender_of
from services.ingest.store import IngestStore
from shared.failures.deadletters import correlation_of
from shared.platform import outbox
from shared.platform.signing import publish
from shared.service import Wiring
from shared.wire.fanout import Outgoing, WireBatch, fanout_batches
from shared.wire.messages import (
    FieldError,
    MessageRefused,
    SnapshotManifest,
)

log = logging.getLogger("schoolmig.ingest")


@dataclass(kw_only=True)
class Ports(Wiring):
    """Ingest's state: made once at start-up (``services.ingest.app``), shared by its steps."""

    store: IngestStore
    clients: KafkaBroker  # the outcomes topic: stock clients read it

    async def drain(self) -> None:
        """Publish what this step (or one a stopped process reached) left in the outbox."""
        await outbox.flush(self.store.pool, self.broker, self.keyring, self.store.outbox)

    async def event(self, event: BaseModel, school_id: str) -> None:
        """One lifecycle event on the events topic, keyed by its school."""
        await publish(self.broker, self.keyring, event, self.topics.events, key=school_id.encode())

    async def dead_letter(
        self,
        message: KafkaMessage,
        body: bytes,
        reason: str,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        about: Sender | None = None,
        tell: bool = True,
    ) -> None:
        """Keep a message not taken in the dead letter (whole, for operators) and, when it is a
        client's (``tell``), answer its client on the outcomes topic: the rule it broke, field by
        field, under its own correlation id."""
        sender = about or sender_of(body, record_of(message).key)
        await self.letters.send(message.raw_message, body, reason, detail, school_id=sender.school_id, errors=errors)
        self.metrics.ingest_rejected.add(1, {"reason": reason})
        if tell:
            await self.tell_refused(message, reason, detail, sender, errors)

    async def tell_refused(
        self, message: KafkaMessage, reason: str, detail: str, sender: Sender, errors: list[FieldError] | None = None
    ) -> None:
        """Answer a client's message that was not taken, on the outcomes topic it may read."""
        source = record_of(message)
        correlation = correlation_of(source)
        await publish(
            self.clients,
            self.keyring,
            MessageRefused(
                school_id=sender.school_id,
                kind=sender.kind,
                snapshot_id=sender.snapshot_id,
                client_id=sender.client_id,
                seqs=sender.seqs,
                correlation_id=correlation,
                reason=reason,
                message=detail,
                errors=errors or [],
                topic=source.topic,
                partition=source.partition,
                offset=source.offset,
            ),
            self.topics.outcomes,
            key=(sender.school_id or "").encode() or None,
            correlation_id=correlation,
        )

    async def publish_all(
        self, outgoing: list[Outgoing], manifest: SnapshotManifest, default_ts: datetime, timezone: str
    ) -> None:
        """Send every record, in batch messages, pipelined; return only when the broker has them all."""
        headers = {"snapshot_id": manifest.snapshot_id, "schema_version": str(manifest.schema_version)}
        await self.publish_wires(
            fanout_batches(
                outgoing,
                manifest,
                max_records=self.settings.batch_records,
                max_bytes=self.settings.batch_bytes,
                max_record_bytes=self.settings.max_record_bytes,
                default_ts=default_ts,
                timezone=timezone,
            ),
            headers,
        )

    async def publish_wires(self, wires: Iterable[WireBatch], headers: dict[str, str] | None = None) -> None:
        """Each batch to its domain's raw topic or the quarantine topic, pipelined; return only
        when the broker has them all."""
        pending = []
        for wire in wires:
            topic = self.topics.quarantine if wire.kind == "quarantine" else self.topics.raw(wire.domain)
            pending.append(
                await publish(self.broker, self.keyring, wire.body, topic, key=wire.key, headers=headers, no_confirm=True)
            )
        await asyncio.gather(*pending)


def record_of(message: KafkaMessage) -> Any:
    """The Kafka record of a message of a single-message subscriber."""
    record = message.raw_message
    return record[0] if isinstance(record, tuple) else record
