"""Reading the dead-letter topic, for people: ``schoolmig deadletters`` and the refusals of
commands the coordinator would not even read (an unknown signer, a stale or forged one)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from schoolmig.output import iso
from shared.platform.kafka import topic_partitions
from shared.wire.messages import DeadLetter


@dataclass(frozen=True)
class Letter:
    at: datetime
    """When the dead letter was written (the record's broker timestamp)."""
    letter: DeadLetter

    def as_json(self) -> dict[str, Any]:
        """Everything but the payload, which may hold personal data: its size and where it is."""
        body = self.letter.model_dump(mode="json", exclude={"payload_b64"})
        try:
            size = len(base64.b64decode(self.letter.payload_b64)) if self.letter.payload_b64 else 0
        except (binascii.Error, ValueError):
            size = 0
        return {"at": iso(self.at), **body, "payload_bytes": size}

    def line(self) -> str:
        d = self.letter
        return (
            f"{iso(self.at)}  {d.stage or '-':<11} {d.reason:<26} {d.school_id or '-'}  "
            f"{d.topic}[{d.partition}]@{d.offset}  {d.message}"
        )


@dataclass
class LetterFilter:
    school_id: str | None = None
    reason: str | None = None
    since: datetime | None = None
    correlation_id: str | None = None

    def __call__(self, letter: Letter) -> bool:
        d = letter.letter
        return (
            (self.school_id is None or d.school_id == self.school_id)
            and (self.reason is None or d.reason == self.reason)
            and (self.since is None or letter.at >= self.since)
            and (self.correlation_id is None or d.correlation_id == self.correlation_id)
        )


class LetterReader:
    """The dead-letter topic's records, from the start or from its end as it was when
    :meth:`start` ran, oldest first per partition; records that are no dead letter are skipped."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.topic = topic
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, group_id=None)
        self.ends: dict[TopicPartition, int] = {}

    async def start(self, *, from_end: bool = False) -> LetterReader:
        await self.consumer.start()
        partitions = await topic_partitions(self.consumer, self.topic)
        self.consumer.assign(partitions)
        self.ends = await self.consumer.end_offsets(partitions) if partitions else {}
        for tp in partitions:
            if from_end:
                self.consumer.seek(tp, self.ends[tp])
            else:
                await self.consumer.seek_to_beginning(tp)
        return self

    async def stop(self) -> None:
        await self.consumer.stop()

    async def batch(self, timeout_s: float) -> list[Letter]:
        found = await self.consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=500)
        out = []
        for records in found.values():
            for record in records:
                try:
                    letter = DeadLetter.model_validate_json(record.value or b"")
                except ValidationError:
                    continue
                out.append(Letter(datetime.fromtimestamp(record.timestamp / 1000, UTC), letter))
        return out

    async def caught_up(self) -> bool:
        """Every partition read up to where it ended when the reader started."""
        for tp, end in self.ends.items():
            if await self.consumer.position(tp) < end:
                return False
        return True

    async def letters(self, keep: Callable[[Letter], bool], *, follow: bool) -> AsyncIterator[Letter]:
        while True:
            for letter in await self.batch(0.5):
                if keep(letter):
                    yield letter
            if not follow and await self.caught_up():
                return
