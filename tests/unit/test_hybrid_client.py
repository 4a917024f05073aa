"""The client side of the hybrid phase (``schoolmig.hybrid``), over fake ports: what it writes
where in each mode, and that its outbox loses nothing while publishing fails, across a restart.
(Against the real broker, with the broker away: ``tests/integration/test_hybrid_outbox.py``.)"""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schoolmig.hybrid import HybridClient, LocalData, Outbox, UseTheApi, WritesHeld
from shared.catalog.domains import Domain
from shared.wire.messages import MAX_INGEST_MESSAGE_BYTES, ChangeBatch, ChangeOp, LocalCleared, Mode, SchoolMode


class Broker:
    def __init__(self) -> None:
        self.up = True
        self.received: list[ChangeBatch] = []

    async def publish(self, batch: ChangeBatch) -> None:
        if not self.up:
            raise ConnectionError("broker away")
        self.received.append(batch)

    def seqs(self) -> list[int]:
        return [c.seq for b in self.received for c in b.changes]


def mode_of(mode: Mode, maintenance: bool = False) -> SchoolMode:
    return SchoolMode(
        school_id="s", mode=mode, maintenance=maintenance, phase="dual_write", reason="test", updated_at=datetime.now(UTC)
    )


def client(tmp_path: Path, broker: Broker, current: list[SchoolMode | None]) -> HybridClient:
    async def mode(_: str) -> SchoolMode | None:
        return current[0]

    return HybridClient(
        "s",
        "web-1",
        local=LocalData(tmp_path / "local.json"),
        outbox=Outbox(tmp_path / "outbox"),
        publisher=broker.publish,
        mode=mode,
        retry_s=(0.01, 0.05),
    )


async def test_hybrid_writes_locally_and_publishes_every_change_in_order(tmp_path: Path) -> None:
    broker = Broker()
    c = client(tmp_path, broker, [mode_of(Mode.HYBRID)])
    await c.create(Domain.PAYMENTS, {"id": "p1", "amount": 5, "updatedAt": "2999-03-01T10:00:00Z"})
    await c.update(Domain.PAYMENTS, {"id": "p1", "amount": 6})
    await c.delete(Domain.PAYMENTS, "p1")
    assert [ch.op for b in broker.received for ch in b.changes] == [ChangeOp.CREATE, ChangeOp.UPDATE, ChangeOp.DELETE]
    assert broker.seqs() == [1, 2, 3] and c.outbox.pending() == []
    assert broker.received[0].changes[0].source_ts == datetime(2999, 3, 1, 10, tzinfo=UTC)  # a later updatedAt
    assert broker.received[1].changes[0].source_ts <= datetime.now(UTC)  # else the clock (an old updatedAt never)
    assert c.local.read() == {"payments": []}


async def test_while_the_broker_is_away_changes_wait_in_the_outbox_and_survive_a_restart(tmp_path: Path) -> None:
    broker = Broker()
    current: list[SchoolMode | None] = [mode_of(Mode.HYBRID)]
    c = client(tmp_path, broker, current)
    await c.create(Domain.CLASSROOMS, {"id": "r1", "capacity": 3})
    broker.up = False
    for n in range(2, 6):  # the app keeps working: every write lands locally and in the outbox
        await c.update(Domain.CLASSROOMS, {"id": "r1", "capacity": n})
    assert [ch.seq for ch in c.outbox.pending()] == [2, 3, 4, 5]
    assert c.local.read()["classrooms"] == [{"id": "r1", "capacity": 5}]

    restarted = client(tmp_path, broker, current)  # the process restarts: the outbox is on disk
    assert [ch.seq for ch in restarted.outbox.pending()] == [2, 3, 4, 5]
    broker.up = True
    stop = asyncio.Event()
    runner = asyncio.create_task(restarted.run(stop))
    while restarted.outbox.pending():
        await asyncio.sleep(0.01)
    stop.set()
    await runner
    assert broker.seqs() == [1, 2, 3, 4, 5]  # everything, once, in order
    change = await restarted.update(Domain.CLASSROOMS, {"id": "r1", "capacity": 9})
    assert change.seq == 6  # a sequence number is never handed out twice, restarts included


async def test_maintenance_holds_writes_and_api_mode_stops_local_writes(tmp_path: Path) -> None:
    broker = Broker()
    current: list[SchoolMode | None] = [mode_of(Mode.HYBRID, maintenance=True)]
    c = client(tmp_path, broker, current)
    with pytest.raises(WritesHeld, match="maintenance"):
        await c.create(Domain.PAYMENTS, {"id": "p1", "amount": 5})
    current[0] = mode_of(Mode.API)
    with pytest.raises(UseTheApi):
        await c.create(Domain.PAYMENTS, {"id": "p1", "amount": 5})
    assert c.local.read() == {} and c.outbox.pending() == [] and broker.received == []


async def test_before_the_hybrid_phase_writes_are_published_too(tmp_path: Path) -> None:
    """A write made after the school's snapshot was read but before it is hybrid would be in
    neither: it is published as well (older than the snapshot, it just loses to it)."""
    broker = Broker()
    for current in (None, mode_of(Mode.LOCAL_STORAGE)):
        c = client(tmp_path, broker, [current])
        await c.create(Domain.STUDENTS, {"id": f"s-{current is None}", "name": "x"})
    assert broker.seqs() == [1, 2] and c.outbox.pending() == []
    assert len(c.local.read()["students"]) == 2


async def test_a_record_that_could_never_be_sent_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    broker = Broker()
    c = client(tmp_path, broker, [mode_of(Mode.HYBRID)])
    for bad in ({"id": "p1", "amount": float("nan")}, {"id": "p1", "note": "a\x00b"}, {"id": "p1", "note": "x" * 600_000}):
        with pytest.raises(ValueError):
            await c.create(Domain.PAYMENTS, bad)
    assert c.local.read() == {} and c.outbox.pending() == [] and broker.received == []


async def test_a_long_outage_drains_in_messages_ingest_takes(tmp_path: Path) -> None:
    broker = Broker()
    current: list[SchoolMode | None] = [mode_of(Mode.HYBRID)]
    c = client(tmp_path, broker, current)
    broker.up = False
    for n in range(12):  # 12 changes of ~100 KB: more than one message may carry
        await c.create(Domain.STUDENTS, {"id": f"s{n}", "notes": "y" * 100_000})
    broker.up = True
    assert await c.flush() == 12
    assert len(broker.received) > 1
    assert all(len(b.model_dump_json().encode()) <= MAX_INGEST_MESSAGE_BYTES for b in broker.received)
    assert broker.seqs() == list(range(1, 13))


async def test_changes_still_waiting_at_the_cutover_are_kept_not_sent(tmp_path: Path) -> None:
    broker = Broker()
    current: list[SchoolMode | None] = [mode_of(Mode.HYBRID)]
    c = client(tmp_path, broker, current)
    broker.up = False
    await c.create(Domain.PAYMENTS, {"id": "p1", "amount": 5})
    broker.up = True
    current[0] = mode_of(Mode.API)
    with pytest.raises(UseTheApi, match="1 change"):
        await c.flush()
    assert [ch.seq for ch in c.outbox.pending()] == [1] and broker.received == []


async def test_its_snapshot_is_its_own_store_read_now_from_the_device_its_changes_name(tmp_path: Path) -> None:
    from shared.wire import chunks
    from shared.wire.messages import SnapshotFormat

    broker = Broker()
    c = client(tmp_path, broker, [mode_of(Mode.HYBRID)])
    await c.create(Domain.PAYMENTS, {"id": "p1", "amount": 5})
    before = datetime.now(UTC)
    manifest, parts = c.snapshot()
    assert manifest.device_id == c.client_id == broker.received[0].client_id  # one id for its changes and snapshots
    assert manifest.format is SnapshotFormat.MOCKDATA_EXPORT and before <= manifest.taken_at <= datetime.now(UTC)
    assert b"".join(chunks.decode(p.data_b64) for p in parts) == (tmp_path / "local.json").read_bytes()
    assert c.snapshot(b'{"payments": []}')[0].snapshot_id != manifest.snapshot_id  # another reading, another snapshot


class Tells(Broker):
    """The broker, keeping the clean-up's messages too."""

    def __init__(self) -> None:
        super().__init__()
        self.cleared: list[LocalCleared] = []

    async def publish(self, batch: ChangeBatch | LocalCleared) -> None:  # type: ignore[override]
        if not self.up:
            raise ConnectionError("broker away")
        if isinstance(batch, LocalCleared):
            self.cleared.append(batch)
        else:
            self.received.append(batch)


def told(clear: bool) -> SchoolMode:
    return mode_of(Mode.API).model_copy(update={"clear_local": clear, "phase": "completed"})


@pytest.mark.parametrize("crash_at", ["archive", "state", "clear", "tell", "told", None])
async def test_the_local_copy_is_archived_then_cleared_then_reported_once_whatever_step_a_crash_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_at: str | None
) -> None:
    """A crash (an exception) at any step leaves the data in the local copy or in its archive
    (never in neither), and the next call finishes: one report, of the data the device held."""
    import schoolmig.hybrid as hybrid

    broker = Tells()
    current: list[SchoolMode | None] = [mode_of(Mode.HYBRID)]
    c = client(tmp_path, broker, current)  # type: ignore[arg-type]
    await c.create(Domain.STUDENTS, {"id": "s1", "name": "A"})
    await c.create(Domain.PAYMENTS, {"id": "p1", "amount": 5})
    before = c.local.path.read_bytes()

    current[0] = told(False)  # cut over, within the grace period: nothing is touched
    assert await c.clean_up_if_told() is None and c.local.path.read_bytes() == before and broker.cleared == []

    current[0] = told(True)
    real = hybrid._write_atomically
    steps = iter(["archive", "state", "clear", "told"])

    def crashing(path: Path, data: bytes, mode: int = 0o644) -> None:
        if next(steps, None) == crash_at:
            raise OSError("the device stopped")
        real(path, data, mode)

    monkeypatch.setattr(hybrid, "_write_atomically", crashing)
    broker.up = crash_at != "tell"
    try:
        await c.clean_up_if_told()
    except (OSError, ConnectionError):
        assert crash_at is not None
    archives = list(tmp_path.glob("local.archive-*.json"))
    assert c.local.path.read_bytes() == before or [a.read_bytes() for a in archives] == [before]  # never in neither

    monkeypatch.setattr(hybrid, "_write_atomically", real)
    broker.up = True
    archive = await c.clean_up_if_told()
    assert archive is not None and archive.read_bytes() == before and stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert json.loads(c.local.path.read_bytes()) == {}
    assert {r.archive_sha256 for r in broker.cleared} == {hashlib.sha256(before).hexdigest()}
    assert broker.cleared[-1].archived_records == 2 and (broker.cleared[-1].school_id, broker.cleared[-1].client_id) == (
        "s",
        "web-1",
    )
    assert len(broker.cleared) == (2 if crash_at == "told" else 1)  # told twice only when the note of it was lost
    assert await c.clean_up_if_told() == archive and len(broker.cleared) == (2 if crash_at == "told" else 1)

    # A rollback, then another cutover that stood its grace period: the clean-up starts again.
    current[0] = told(False)
    assert await c.clean_up_if_told() is None
    c.local.path.write_bytes(b'{"students": [{"id": "s2"}]}')
    current[0] = told(True).model_copy(update={"updated_at": datetime(2100, 1, 1, tzinfo=UTC)})
    again = await c.clean_up_if_told()
    assert again is not None and again != archive and json.loads(again.read_bytes()) == {"students": [{"id": "s2"}]}
    assert broker.cleared[-1].archived_records == 1


async def test_changes_still_in_the_outbox_hold_the_clean_up_off(tmp_path: Path) -> None:
    broker = Tells()
    current: list[SchoolMode | None] = [mode_of(Mode.HYBRID)]
    c = client(tmp_path, broker, current)  # type: ignore[arg-type]
    broker.up = False
    await c.create(Domain.STUDENTS, {"id": "s1", "name": "A"})  # kept in the outbox: the broker is away
    current[0] = told(True)
    before = c.local.path.read_bytes()
    assert await c.clean_up_if_told() is None and c.local.path.read_bytes() == before and broker.cleared == []
