"""The client side of the hybrid phase: the plan's ``HybridDataAdapter``.

A :class:`HybridClient` stands where the app's data service writes. On every write it asks
what mode the school is in (the coordinator's ``GET /schools/{id}/mode``, through a
:data:`ModeSource`):

- ``hybrid`` (and ``localStorage``, or a school the coordinator does not know yet): it writes
  locally **and** publishes the change (``shared.wire.messages.Change``). Before the school is
  ``hybrid`` too: a write made after its snapshot was read but before the hybrid phase began
  would otherwise be in neither (a change older than the snapshot just loses to it). The
  change goes to a durable local :class:`Outbox` first (an fsynced file), and leaves it
  only once Kafka acknowledged it, so a change is never lost while the broker is away: the
  outbox is retried with back-off (``flush``, ``run``) and survives a restart;
- maintenance (a cutover in progress): the write is refused with :class:`WritesHeld`, a
  clear error the app shows; nothing is written anywhere;
- ``api``: the write is refused with :class:`UseTheApi`; the client stops writing locally.
  Changes still in the outbox then (made before the cutover, the broker away) are kept, not
  sent (ingest would refuse them): ``flush`` raises :class:`UseTheApi` saying how many, so
  the app can hand them to the API.

A record the pipeline could not carry (``NaN``, NUL, too deep, too large for one message)
is refused before anything is written (``ValueError``): an outbox entry that can never be
sent would hold up every change behind it.

Every change gets the next number of this client's counter (``seq``, kept in the outbox's
directory and never reused, not even after a restart) and its time: the client's clock (or
the record's ``updatedAt`` if that is later). With the client's id, that orders all writes
of a record (``shared.ledger.versions``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schoolmig.sdk import build_envelopes, publish_snapshot
from shared.catalog.domains import Domain
from shared.catalog.timezones import local_zone
from shared.platform.settings import Settings
from shared.source import jsonsafe
from shared.wire.messages import (
    MAX_CHANGES_PER_MESSAGE,
    MAX_INGEST_MESSAGE_BYTES,
    Change,
    ChangeBatch,
    ChangeOp,
    LocalCleared,
    Mode,
    SchoolMode,
    SnapshotChunk,
    SnapshotFormat,
    SnapshotManifest,
)

log = logging.getLogger("schoolmig.hybrid")
MAX_DEPTH = Settings.model_fields["max_nesting_depth"].default  # as ingest reads records
_ENVELOPE_BYTES = 512  # a change message's own fields, generously
MAX_CHANGE_BYTES = MAX_INGEST_MESSAGE_BYTES - _ENVELOPE_BYTES

ModeSource = Callable[[str], Awaitable[SchoolMode | None]]
"""The school's current mode (None: the coordinator does not know the school: localStorage)."""
Publisher = Callable[[ChangeBatch | LocalCleared], Awaitable[None]]
"""Sends one message (changes, or the local copy's clean-up) and returns once Kafka
acknowledged it; raises if it could not."""


class WritesHeld(RuntimeError):
    """The school is in maintenance (a cutover in progress): try again in a moment."""


class UseTheApi(RuntimeError):
    """The school runs on the API now: writes go there, not to the browser's storage."""


def _write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data``, durably: a crash leaves the old file or the new one
    (created with ``mode``, never wider for a moment)."""
    tmp = path.with_name(path.name + ".tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Outbox:
    """Changes not yet acknowledged by Kafka, in order, in one JSON file (``pending.json``),
    with the client's sequence counter beside it (``seq``). Every change is on disk before
    the app is told its write succeeded."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._pending_path = directory / "pending.json"
        self._seq_path = directory / "seq"

    def pending(self) -> list[Change]:
        if not self._pending_path.exists():
            return []
        return [Change.model_validate(c) for c in json.loads(self._pending_path.read_bytes())]

    def next_seq(self) -> int:
        """The next sequence number, persisted before it is used (never handed out twice)."""
        current = int(self._seq_path.read_text()) if self._seq_path.exists() else 0
        _write_atomically(self._seq_path, str(current + 1).encode())
        return current + 1

    def add(self, change: Change) -> None:
        self._save([*self.pending(), change])

    def remove_first(self, count: int) -> None:
        self._save(self.pending()[count:])

    def _save(self, changes: list[Change]) -> None:
        _write_atomically(self._pending_path, json.dumps([c.model_dump(mode="json") for c in changes]).encode())


class LocalData:
    """The browser's storage, as a ``mockdata_export`` JSON file (one array per domain)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, list[dict[str, Any]]]:
        return json.loads(self.path.read_bytes()) if self.path.exists() else {}

    def apply(self, change: Change) -> None:
        data = self.read()
        records = [r for r in data.get(change.domain.value, []) if str(r.get("id")) != change.record_id]
        if change.op is not ChangeOp.DELETE:
            assert change.record is not None
            position = next(
                (i for i, r in enumerate(data.get(change.domain.value, [])) if str(r.get("id")) == change.record_id), len(records)
            )
            records.insert(position, change.record)
        data[change.domain.value] = records
        _write_atomically(self.path, json.dumps(data, ensure_ascii=False).encode())


def _source_ts(record: dict[str, Any] | None, clock: Callable[[], datetime]) -> datetime:
    """When the write happened: the client's clock, or the record's ``updatedAt`` when that is
    later (an app whose clock is behind the one that stamped it). Never an ``updatedAt`` the
    app forgot to move: a change stamped with its record's old time would lose to the
    snapshot taken since, and be dropped."""
    now = clock()
    value = (record or {}).get("updatedAt")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
            return max(parsed, now)
        except ValueError:
            pass
    return now


class HybridClient:
    def __init__(
        self,
        school_id: str,
        client_id: str,
        *,
        local: LocalData,
        outbox: Outbox,
        publisher: Publisher,
        mode: ModeSource,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_s: tuple[float, float] = (0.5, 30.0),
        timezone: str | None = None,
    ) -> None:
        """``timezone``: the browser's (``Intl.DateTimeFormat().resolvedOptions().timeZone``),
        reported with every snapshot and change; default: this machine's (``local_zone``)."""
        self.school_id, self.client_id = school_id, client_id
        self.timezone = timezone if timezone is not None else local_zone()
        self.local, self.outbox, self.publisher, self.mode, self.clock = local, outbox, publisher, mode, clock
        self.retry_s = retry_s
        self._flushing = asyncio.Lock()

    async def create(self, domain: Domain, record: dict[str, Any]) -> Change:
        return await self._write(ChangeOp.CREATE, domain, str(record.get("id", "")).strip(), record)

    async def update(self, domain: Domain, record: dict[str, Any]) -> Change:
        return await self._write(ChangeOp.UPDATE, domain, str(record.get("id", "")).strip(), record)

    async def delete(self, domain: Domain, record_id: str) -> Change:
        return await self._write(ChangeOp.DELETE, domain, record_id, None)

    async def _write(self, op: ChangeOp, domain: Domain, record_id: str, record: dict[str, Any] | None) -> Change:
        await self._writable()
        if record is not None and (why := jsonsafe.unrepresentable(record, max_depth=MAX_DEPTH)) is not None:
            raise ValueError(f"the record cannot be migrated as it is: {why}")
        change = Change(
            op=op,
            domain=domain,
            record_id=record_id,
            record=record,
            source_ts=_source_ts(record, self.clock),
            seq=self.outbox.next_seq(),
        )
        if len(_encoded(change)) > MAX_CHANGE_BYTES:
            raise ValueError(f"the record is larger than one change may be ({MAX_CHANGE_BYTES} bytes as JSON)")
        self.outbox.add(change)  # first: a crash after it publishes the change at the next start
        self.local.apply(change)
        try:
            await self.flush()
        except UseTheApi:
            raise
        except Exception as exc:  # kept in the outbox; ``run`` (or the next write) sends it
            log.warning("change %s kept in the outbox: %s", change.seq, type(exc).__name__)
        return change

    def snapshot(self, content: bytes | None = None) -> tuple[SnapshotManifest, list[SnapshotChunk]]:
        """A snapshot of this client's own store (``content``: as read already), read now by
        its clock, from the device its changes name (``client_id``)."""
        if content is None:
            content = self.local.path.read_bytes() if self.local.path.exists() else b"{}"
        return build_envelopes(
            content,
            self.school_id,
            fmt=SnapshotFormat.MOCKDATA_EXPORT,
            taken_at=self.clock(),
            device_id=self.client_id,
            timezone=self.timezone,
        )

    async def publish_snapshot(self, bootstrap_servers: str, topic: str) -> SnapshotManifest:
        """Publish :meth:`snapshot` to the ingest topic; return its manifest once Kafka has it all."""
        content = self.local.path.read_bytes() if self.local.path.exists() else b"{}"
        manifest, _ = self.snapshot(content)
        return await publish_snapshot(
            bootstrap_servers,
            topic,
            self.school_id,
            content,
            fmt=manifest.format,
            snapshot_id=manifest.snapshot_id,
            taken_at=manifest.taken_at,
            device_id=self.client_id,
            timezone=self.timezone,
        )

    async def _writable(self) -> SchoolMode | None:
        current = await self.mode(self.school_id)
        if current is not None and current.maintenance:
            raise WritesHeld(f"school {self.school_id} is in maintenance ({current.reason}): writes are held, try again shortly")
        if current is not None and current.mode is Mode.API:
            raise UseTheApi(f"school {self.school_id} runs on the API: write through it, not to the browser's storage")
        return current

    async def flush(self) -> int:
        """Publish what the outbox holds, in order; return how many left it. Raises (keeping
        the rest) when Kafka does not acknowledge."""
        sent = 0
        async with self._flushing:
            if not self.outbox.pending():
                return 0
            current = await self.mode(self.school_id)
            if current is not None and current.mode is Mode.API:
                raise UseTheApi(
                    f"school {self.school_id} runs on the API: {len(self.outbox.pending())} change(s) made "
                    "before the cutover are still in the outbox (kept; ingest would refuse them)"
                )
            while pending := _one_message(self.outbox.pending()):
                await self.publisher(
                    ChangeBatch(school_id=self.school_id, client_id=self.client_id, changes=pending, timezone=self.timezone)
                )
                self.outbox.remove_first(len(pending))
                sent += len(pending)
        return sent

    async def clean_up_if_told(self) -> Path | None:
        """The plan's last step, once the school's mode says ``clear_local`` (its cutover stood
        the grace period without rollback): the local copy is archived to a file beside it
        (mode 0600, named by its SHA-256, fsynced), then cleared, then ingest is told
        (``local.cleared``). Nothing is cleared before its archive is on disk, and a crash at
        any point is taken up at the next call: what is in the local copy and not in the
        archive is archived first; an archive cleared but not told is told. The steps belong
        to one announcement of the mode (its ``updated_at``, sent with the report): after a
        rollback and another cutover, the next announcement starts them again. Changes still
        in the outbox (made before the cutover) hold it off: the app hands them over first.
        Returns the archive once told."""
        current = await self.mode(self.school_id)
        if current is None or not current.clear_local:
            return None
        if pending := self.outbox.pending():  # writes from before the cutover: the app hands them to the API first
            log.warning("local copy of %s kept: %d change(s) still in the outbox", self.school_id, len(pending))
            return None
        asked = current.updated_at.isoformat()
        state_path = self.local.path.with_name(self.local.path.name + ".cleanup.json")
        state = json.loads(state_path.read_bytes()) if state_path.exists() else None
        if state is not None and state.get("asked") != asked:
            state = None  # an earlier cutover's clean-up: this one starts afresh
        if state is not None and state.get("told"):
            return Path(state["archive"])
        content = self.local.path.read_bytes() if self.local.path.exists() else b"{}"
        held = json.loads(content or b"{}")
        if state is None or (held and hashlib.sha256(content).hexdigest() != state["sha256"]):
            digest = hashlib.sha256(content).hexdigest()
            archive = self.local.path.with_name(f"{self.local.path.stem}.archive-{digest[:16]}.json")
            _write_atomically(archive, content, mode=0o600)  # the school's personal data: its owner only
            records = sum(len(v) for v in held.values() if isinstance(v, list))
            state = {"asked": asked, "archive": str(archive), "sha256": digest, "records": records}
            state["cleared_at"] = self.clock().isoformat()
            _write_atomically(state_path, json.dumps(state).encode(), mode=0o600)  # archived: clearing may begin
        if held:
            _write_atomically(self.local.path, b"{}")
        await self.publisher(
            LocalCleared(
                school_id=self.school_id,
                client_id=self.client_id,
                announced_at=current.updated_at,
                cleared_at=datetime.fromisoformat(state["cleared_at"]),
                archived_records=state["records"],
                archive_sha256=state["sha256"],
            )
        )
        _write_atomically(state_path, json.dumps(state | {"told": True}).encode(), mode=0o600)
        log.info("local copy of %s archived to %s and cleared", self.school_id, state["archive"])
        return Path(state["archive"])

    async def run(self, stop: asyncio.Event) -> None:
        """Keep flushing the outbox until ``stop``, backing off while publishing fails; and,
        once the school's mode says so, archive and clear the local copy (:meth:`clean_up_if_told`)."""
        delay = self.retry_s[0]
        while not stop.is_set():
            try:
                await self.flush()
                delay = self.retry_s[0]
            except Exception as exc:
                log.warning(
                    "outbox: publishing failed (%s); %d change(s) kept, retrying in %.1fs",
                    type(exc).__name__,
                    len(self.outbox.pending()),
                    delay,
                )
                delay = min(delay * 2, self.retry_s[1])
            try:  # apart: a clean-up that cannot go on never holds up the changes
                await self.clean_up_if_told()
            except Exception as exc:
                log.warning("local copy: clean-up not done yet (%s); tried again", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                pass


def _encoded(change: Change) -> bytes:
    return change.model_dump_json().encode()


def _one_message(pending: list[Change]) -> list[Change]:
    """The first changes of the outbox that fit one message ingest takes (by count and bytes)."""
    size = _ENVELOPE_BYTES
    taken: list[Change] = []
    for change in pending[:MAX_CHANGES_PER_MESSAGE]:
        size += len(_encoded(change)) + 1
        if taken and size > MAX_INGEST_MESSAGE_BYTES:
            break
        taken.append(change)
    return taken


def kafka_publisher(bootstrap_servers: str, topic: str, *, timeout_s: float = 10.0) -> Publisher:
    """A :data:`Publisher` over aiokafka, keyed by school (one partition, in order). A
    producer is started per attempt: after an outage nothing stale is reused."""
    from aiokafka import AIOKafkaProducer

    async def send(batch: ChangeBatch | LocalCleared) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            request_timeout_ms=int(timeout_s * 1000),
            max_request_size=1024 * 1024,
        )
        try:
            await asyncio.wait_for(producer.start(), timeout_s)
            await asyncio.wait_for(
                producer.send_and_wait(topic, batch.model_dump_json().encode(), key=batch.school_id.encode()), timeout_s
            )
        finally:
            try:
                await asyncio.wait_for(producer.stop(), timeout_s)
            except Exception:  # the broker is away: nothing more to close cleanly
                pass

    return send


def http_mode_source(base_url: str) -> ModeSource:
    """The coordinator's ``GET /schools/{id}/mode``."""
    import aiohttp

    async def mode(school_id: str) -> SchoolMode | None:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base_url.rstrip('/')}/schools/{school_id}/mode") as response:
                if response.status == 404:
                    return None
                response.raise_for_status()
                return SchoolMode.model_validate_json(await response.read())

    return mode
