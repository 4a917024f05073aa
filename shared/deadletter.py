"""Dead letters: a message a consumer cannot use, kept whole with its reason, so that the
partition moves on and nothing is dropped without a trace. Shared by ingest (the public
door) and the internal consumers (transform, loader) for what is not a batch they read."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from faststream.kafka import KafkaBroker

from shared import chunks
from shared.messages import DeadLetter

log = logging.getLogger("schoolmig.deadletter")

#: A dead letter must fit in one Kafka message (base64 adds a third): a larger payload is
#: left out, its size said; the message it came from can be read at its offset until the
#: topic's retention ends. (Storing it in PostgreSQL instead is planned.)
MAX_PAYLOAD_BYTES = 740 * 1024  # base64: ~987 KiB, under the 1 MiB a message may have


class Located(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None


async def dead_letter(broker: KafkaBroker, topic: str, source: Located | Any, body: bytes, reason: str, detail: str) -> None:
    """Publish ``body`` (read at ``source``) to the dead-letter ``topic`` with the reason."""
    if len(body) > MAX_PAYLOAD_BYTES:
        detail = f"{detail} (payload of {len(body)} bytes left out: too large for a dead letter)"
        body = b""
    await broker.publish(
        DeadLetter(
            reason=reason, message=detail, topic=source.topic, partition=source.partition, offset=source.offset,
            payload_b64=chunks.encode(body),
        ),
        topic,
        key=source.key,  # one sender's dead letters stay in order on one partition
    )  # fmt: skip
    log.warning("dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, reason)
