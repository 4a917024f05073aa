"""The services' policies, in-process: each handler's policy object run with fakes for its
store and its broker (no stack). The same code runs for real in the integration tests."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from schoolmig.demo import school_dump
from schoolmig.sdk import build_envelopes
from services.coordinator import sync as sync_module
from services.coordinator.phases import IllegalTransition, Phase
from services.coordinator.sync import MAX_REDRIVES, SyncMonitor
from services.ingest.intake import Intake
from services.ingest.release import Release
from services.loader.deferral import Position
from services.loader.loading import Loading
from shared.catalog.domains import Domain
from shared.catalog.timezones import SchoolZone, ZoneSource
from shared.ledger.accounting import DomainCounts
from shared.platform.outbox import Outbound
from shared.platform.settings import Settings
from shared.platform.signing import Keyring
from shared.platform.topics import Topics
from shared.service import Wiring
from shared.wire import chunks as chunk_codec
from shared.wire.messages import Change, ChangeBatch, ChangeOp, Mode, SnapshotWithheld, ValidationRequested


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def wiring(settings: Settings, broker: Any = None, letters: Any = None) -> dict[str, Any]:
    """What a service's policy object is made from (``shared.service.Wiring``), with fakes."""
    keyring = Keyring.for_service(settings)
    return vars(Wiring(settings, Topics.from_settings(settings), keyring, broker, letters, metrics()))


class Metric:
    def __init__(self) -> None:
        self.added: list[tuple[int, dict[str, Any]]] = []

    def add(self, n: int, labels: dict[str, Any] | None = None) -> None:
        self.added.append((n, labels or {}))

    def record(self, *_: Any) -> None:
        pass


def metrics() -> Any:
    names = [
        "errors",
        "records_loaded",
        "changes_applied",
        "records_quarantined",
        "changes_received",
        "ingest_rejected",
        "snapshots_released",
    ]
    fake = SimpleNamespace(**{n: Metric() for n in names}, sync_duration=Metric())
    fake.schools = SimpleNamespace(lag={}, progress={}, phase={}, speed={})
    return fake


# --------------------------------------------------------------------------- the loader


class Writer:
    """Says which messages' records await parents still on their way, given what is written now."""

    def __init__(self, parents: dict[int, int]) -> None:
        self.parents = parents  # message -> the message holding its parent
        self.pool, self.tally = None, Counter[str]()

    async def parents_on_their_way(self, view: list[list[int]]) -> dict[int, set[tuple[str, str, str]]]:
        return {
            i: {("s", "n", f"parent-of-{i}")}
            for i, parent in self.parents.items()
            if view[i] and (parent < 0 or not view[parent])  # -1: a parent no message of the poll holds
        }


def loading(parents: dict[int, int], wait_s: float = 30.0) -> Loading:
    settings = Settings(parent_wait_s=wait_s)
    return Loading(**wiring(settings), writer=Writer(parents))


def test_a_child_whose_parent_waits_waits_too_and_its_partition_keeps_its_order() -> None:
    positions = [Position("rows.a", 0, 10), Position("rows.b", 0, 5), Position("rows.b", 0, 6), Position("rows.c", 0, 1)]
    # 0 awaits a parent on its way; 1 holds a child of 0; 2 follows 1 in its partition; 3 is free.
    plan = run(loading({0: -1, 1: 0}).plan_poll(positions, [[0], [1], [2], [3]]))
    assert plan.now == [3]
    assert plan.rewind == {("rows.a", 0): 10, ("rows.b", 0): 5}


def test_once_the_wait_budget_is_spent_nothing_waits() -> None:
    positions = [Position("rows.a", 0, 10), Position("rows.b", 0, 5)]
    plan = run(loading({0: -1, 1: 0}, wait_s=0.0).plan_poll(positions, [[0], [1]]))
    assert plan.now == [0, 1] and plan.rewind == {}


@given(st.lists(st.integers(0, 5), min_size=1, max_size=8), st.data())
@hsettings(max_examples=60, deadline=None)
def test_the_plan_never_writes_a_message_after_one_that_waits_in_its_partition(partitions: list[int], data: Any) -> None:
    positions = [Position("rows", p, i) for i, p in enumerate(partitions)]
    parents = data.draw(st.dictionaries(st.integers(0, len(partitions) - 1), st.integers(-1, len(partitions) - 1)))
    plan = run(loading(parents).plan_poll(positions, [[i] for i in range(len(partitions))]))
    for i in plan.now:
        p = positions[i]
        assert p.tp not in plan.rewind or p.offset < plan.rewind[p.tp]
    waiting = set(range(len(positions))) - set(plan.now)
    for i in waiting:  # a waiting message is in a rewound partition, at or after its rewind point
        assert positions[i].offset >= plan.rewind[positions[i].tp]
    if len(set(partitions)) == len(partitions) and all(p < 0 or p not in parents for p in parents.values()):
        for child, parent in parents.items():  # short chains settle: no child written before its parent's message
            assert child not in plan.now or parent < 0 or parent == child or parent in plan.now
    if not any(parent < 0 for parent in parents.values()):  # nothing on its way: everything is written now
        assert plan.now == list(range(len(positions))) and plan.rewind == {}


# --------------------------------------------------------------------------- the coordinator's sync


@dataclass
class Operations:
    redrives: list[tuple[str, str]] = field(default_factory=list)
    handed_back: list[Any] = field(default_factory=list)
    moved: list[tuple[str, Phase]] = field(default_factory=list)

    async def redrive(self, school_id: str, snapshot_id: str, actor: str, reason: str) -> str:
        self.redrives.append((school_id, snapshot_id))
        return "re-driven"

    async def hand_back(self, records: Any) -> None:
        self.handed_back.append(records)

    async def phase_changed(self, school_id: str, phase: Phase, why: str) -> None:
        self.moved.append((school_id, phase))

    drained: int = 0

    def validation_request(self, school_id: str, snapshot_id: str, cut: Any = None) -> Outbound:
        command = ValidationRequested(run_id=f"run-{school_id}", school_id=school_id, snapshot_id=snapshot_id)
        return Outbound("schoolmig.commands.validate", school_id.encode(), command)

    async def drain(self) -> None:
        self.drained += 1

    modes_announced: int = 0

    async def announce_modes(self) -> int:
        self.modes_announced += 1
        return 2


@dataclass
class CoordinatorStore:
    sweep: Any = field(default_factory=lambda: SimpleNamespace(redrive=[], pending=0, orphans=0))
    illegal: bool = False
    transitions: list[tuple[str, Phase]] = field(default_factory=list)
    announced: list[Any] = field(default_factory=list)  # what each move wrote to the outbox, in its transaction
    runs: list[str] = field(default_factory=list)
    pool: Any = None

    async def new_validation_run(self, run_id: str, school_id: str, snapshot_id: str) -> None:
        self.runs.append(run_id)

    async def device_snapshots(self, school_id: str) -> set[str]:
        return set()

    async def has_changes(self, school_id: str) -> bool:
        return False

    async def mark_deleted(self, school_id: str, snapshot_id: str) -> int:
        return 0

    async def sweep_parked(self, school_id: str, snapshot_id: str) -> Any:
        return self.sweep

    async def transition(self, school_id: str, snapshot_id: str, target: Phase, then: Any = (), **_: Any) -> Phase:
        if self.illegal:
            raise IllegalTransition("moved meanwhile")
        self.transitions.append((school_id, target))
        self.announced.append([(o.topic, o.message) for o in then])
        return Phase.DUAL_WRITE

    async def entered_at(self, school_id: str, phase: Phase) -> Any:
        return datetime.now(UTC)

    marks: dict[tuple[str, int], int] = field(default_factory=dict)  # the broker_marks table
    loss: bool = False  # the broker_losses row

    async def broker_loss_pending(self, marker: str, marks: dict[tuple[str, int], int]) -> bool:
        self.loss |= any(high > marks[where] for where, high in self.marks.items() if where in marks)
        self.marks = dict(marks)
        return self.loss

    async def broker_recovered(self, marker: str) -> None:
        self.loss = False

    async def syncing(self) -> list[tuple[str, str]]:
        return [("a", "n1"), ("b", "n2")]


def monitor(store: CoordinatorStore | None = None, redrive_after_s: float = 10.0) -> tuple[SyncMonitor, Operations]:
    operations = Operations()
    settings = Settings(redrive_after_s=redrive_after_s)
    return SyncMonitor(**wiring(settings), store=store or CoordinatorStore(), operations=operations), operations


COUNTS = {Domain.STUDENTS: DomainCounts(source=3, loaded=1)}
DONE = {Domain.STUDENTS: DomainCounts(source=3, loaded=2, quarantined=1)}


def test_a_school_whose_counts_stand_still_is_re_driven_with_a_doubling_wait_then_left_to_an_operator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(sync_module.time, "monotonic", lambda: clock[0])
    sync, operations = monitor(redrive_after_s=10.0)
    rounds = []
    for step in [0, 5, 11, 20, 31, 50, 71, 110, 151, 230, 311, 470, 631, 950, 2000, 5000]:
        clock[0] = 1000.0 + step
        run(sync.redrive_if_stuck("s", "n", COUNTS))
        rounds.append(len(operations.redrives))
    assert rounds == [0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5, 5, 5]  # after more than 10, 20, 40, 80, 160 s
    assert len(operations.redrives) == MAX_REDRIVES
    assert sync.metrics.errors.added == [(1, {"category": "critical", "where": "redrive"})]


def test_counts_that_move_reset_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(sync_module.time, "monotonic", lambda: clock[0])
    sync, operations = monitor(redrive_after_s=10.0)
    for step, loaded in [(0, 1), (8, 2), (16, 3), (24, 4)]:  # progress every 8 s: never stuck
        clock[0] = step
        run(sync.redrive_if_stuck("s", "n", {Domain.STUDENTS: DomainCounts(source=9, loaded=loaded)}))
    assert operations.redrives == []


def test_a_school_with_records_missing_is_not_synced(monkeypatch: pytest.MonkeyPatch) -> None:
    store = CoordinatorStore()
    sync, operations = monitor(store)
    assert run(sync.check_sync("s", "n", COUNTS)) is False
    assert run(sync.check_sync("s", "n", None)) is False
    assert store.transitions == [] and store.announced == []


def test_parked_records_whose_parents_arrived_are_handed_back_before_the_school_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    store = CoordinatorStore(sweep=SimpleNamespace(redrive=["students/x"], pending=0, orphans=0))
    sync, operations = monitor(store)
    assert run(sync.check_sync("s", "n", DONE)) is False
    assert operations.handed_back == [["students/x"]] and store.transitions == []


def test_a_school_accounted_for_moves_to_synced_and_asks_for_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    async def counts(pool: Any, school_id: str, snapshot_id: str) -> Any:
        return DONE

    monkeypatch.setattr(sync_module, "record_counts", counts)
    store = CoordinatorStore()
    sync, operations = monitor(store)
    assert run(sync.check_sync("s", "n", DONE)) is True
    assert store.transitions == [("s", Phase.SYNCED)] and operations.moved == [("s", Phase.SYNCED)]
    # The validation it asks for is written with the move, in its transaction, then published.
    [[(topic, command)]] = store.announced
    assert topic == "schoolmig.commands.validate" and isinstance(command, ValidationRequested)
    assert (command.school_id, command.snapshot_id) == ("s", "n") and store.runs == [command.run_id]
    assert operations.drained == 1
    moved_meanwhile = CoordinatorStore(illegal=True)
    sync, operations = monitor(moved_meanwhile)
    assert run(sync.check_sync("s", "n", DONE)) is False
    assert moved_meanwhile.transitions == [] and moved_meanwhile.announced == [] and operations.drained == 0


# --------------------------------------------------------------------------- ingest's changes


class Broker:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def publish(self, body: bytes, topic: str, **_: Any) -> Any:
        self.sent.append((topic, body))
        return asyncio.sleep(0)


class Letters:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, source: Any, body: bytes, reason: str, detail: str, **_: Any) -> None:
        self.sent.append(reason)


@dataclass
class IngestStore:
    mode: Mode = Mode.HYBRID
    reused: set[int] = field(default_factory=set)
    saved: list[int] = field(default_factory=list)

    async def mode_of(self, school_id: str) -> tuple[Mode, bool]:
        return self.mode, False

    async def save_changes(self, batch: ChangeBatch, accepted: Any) -> set[int]:
        self.saved += [c.seq for c in batch.changes]
        return self.reused

    async def school_default_ts(self, school_id: str, first: datetime) -> datetime:
        return first

    async def school_zone(self, school_id: str, *_: Any) -> Any:
        return SimpleNamespace(name="Europe/Skopje")


def intake(store: IngestStore) -> tuple[Intake, Broker, Letters]:
    settings = Settings(service_key="k" * 32, kafka_bootstrap_servers="unused:9092")
    broker, letters = Broker(), Letters()
    release = Release(**wiring(settings, broker, letters), store=store, clients=broker)
    return Intake(**vars(release), release=release), broker, letters


def changes(*seqs: int) -> ChangeBatch:
    return ChangeBatch(
        school_id="s",
        client_id="web",
        changes=[
            Change(
                op=ChangeOp.UPDATE,
                domain=Domain.CLASSROOMS,
                record_id=f"r{seq}",
                record={"id": f"r{seq}", "name": "Room"},
                source_ts=datetime(2024, 3, 1, tzinfo=UTC),
                seq=seq,
            )
            for seq in seqs
        ],
    )


MESSAGE = SimpleNamespace(raw_message=SimpleNamespace(topic="schoolmig.ingest", partition=0, offset=7, key=b"s", headers=[]))


def test_a_change_for_a_school_on_the_api_is_refused_with_an_answer_and_kept_nowhere() -> None:
    store = IngestStore(mode=Mode.API)
    door, broker, letters = intake(store)
    run(door.changes(changes(1), b"{}", MESSAGE))  # type: ignore[arg-type]
    assert letters.sent == ["school_cut_over"] and store.saved == []
    topics = [topic for topic, _ in broker.sent]
    assert "schoolmig.events" in topics and "schoolmig.outcomes" in topics and not any(".raw." in t for t in topics)


def test_changes_are_kept_and_sent_on_and_one_received_before_with_other_content_is_dead_lettered() -> None:
    store = IngestStore(reused={0})  # the first change's position
    door, broker, letters = intake(store)
    run(door.changes(changes(1, 2), b"{}", MESSAGE))  # type: ignore[arg-type]
    assert store.saved == [1, 2]
    assert letters.sent == ["conflicting_change"]
    raw = [body for topic, body in broker.sent if topic == "schoolmig.raw.classrooms"]
    assert raw and b'"r2"' in b"".join(raw) and b'"r1"' not in b"".join(raw)
    assert all(b"Europe/Skopje" in body for body in raw)  # read in the school's zone


# --------------------------------------------------------------------------- ingest's release


@dataclass
class ReleaseStore:
    """Holds one snapshot's manifest and chunks; records what the release did, in order."""

    manifest: Any
    stored: list[bytes]
    twin: str | None = None
    superseded_by: str | None = None
    done: list[str] = field(default_factory=list)
    marked: list[Any] = field(default_factory=list)  # the events written with the mark, in its transaction
    pool: Any = None

    async def release_state(self, school_id: str, snapshot_id: str) -> Any:
        return SimpleNamespace(manifest=self.manifest, released=bool(self.marked), chunks_received=len(self.stored))

    async def chunks(self, school_id: str, snapshot_id: str) -> list[bytes]:
        return self.stored

    async def save_backup(self, manifest: Any, content: bytes, path: str) -> bool:
        self.done.append("backup")
        return True

    async def unchanged_of(self, manifest: Any) -> str | None:
        return self.twin

    async def note_unchanged(self, *_: Any) -> None:
        self.done.append("unchanged")

    async def school_zone(self, *_: Any) -> SchoolZone:
        return SchoolZone("Europe/Skopje", ZoneSource.CLIENT)

    async def device_zones(self, school_id: str) -> dict[str, str]:
        return {}

    async def save_audit(self, *_: Any) -> None:
        self.done.append("audit")

    async def default_ts(self, school_id: str, snapshot_id: str, taken_at: datetime) -> datetime:
        return taken_at

    async def underived_history(self, *_: Any) -> list[str]:
        return []

    async def derive(self, *_: Any, **__: Any) -> Any:
        return SimpleNamespace(superseded_by=self.superseded_by, versions=None)

    async def note_superseded(self, *_: Any) -> None:
        self.done.append("superseded")

    async def refuse(self, school_id: str, snapshot_id: str, reason: str) -> None:
        self.done.append(f"refused: {reason}")

    async def mark_released(self, manifest: Any, audit: Any, events: list[Outbound]) -> None:
        self.done.append("marked")
        self.marked += [e.message for e in events]


def releasing(store: ReleaseStore, tmp_path: Any) -> tuple[Release, Broker, Letters]:
    settings = Settings(service_key="k" * 32, kafka_bootstrap_servers="unused:9092", backup_dir=tmp_path)
    broker, letters = Broker(), Letters()
    release = Release(**wiring(settings, broker, letters), store=store, clients=broker)

    async def drain() -> None:  # the outbox's publish (tested for real in tests/integration/test_outbox.py)
        store.done.append("drained")

    release.drain = drain  # type: ignore[method-assign]
    return release, broker, letters


def snapshot(school: str) -> tuple[Any, list[bytes]]:
    content = json.dumps(school_dump(1, seed=3, messy=False)).encode()
    manifest, parts = build_envelopes(content, school, taken_at=datetime(2024, 3, 1, tzinfo=UTC), chunk_bytes=4096)
    return manifest, [chunk_codec.decode(p.data_b64) for p in parts]


def test_a_complete_snapshot_is_fanned_out_then_marked_released_with_its_events_in_one_step(tmp_path: Any) -> None:
    manifest, parts = snapshot("s")
    store = ReleaseStore(manifest, parts[:-1])
    release, broker, _ = releasing(store, tmp_path)
    run(release.if_complete("s", manifest.snapshot_id, MESSAGE))  # type: ignore[arg-type]
    assert store.done == [] and broker.sent == []  # a chunk missing: nothing happens yet
    store.stored = parts
    run(release.if_complete("s", manifest.snapshot_id, MESSAGE))  # type: ignore[arg-type]
    assert store.done == ["backup", "audit", "marked", "drained"]
    assert [type(e).__name__ for e in store.marked] == ["AuditCompleted", "SnapshotReleased"]
    assert {topic for topic, _ in broker.sent} >= {"schoolmig.raw.students"}  # fanned out before the mark
    assert not any(topic == "schoolmig.events" for topic, _ in broker.sent)  # events leave through the outbox only
    run(release.if_complete("s", manifest.snapshot_id, MESSAGE))  # type: ignore[arg-type]
    assert store.done.count("marked") == 1  # released once


def test_the_same_file_again_or_an_older_reading_is_withheld_not_fanned_out(tmp_path: Any) -> None:
    for store, why in [
        (ReleaseStore(*snapshot("s"), twin="earlier"), "unchanged"),
        (ReleaseStore(*snapshot("s"), superseded_by="newer"), "superseded"),
    ]:
        release, broker, _ = releasing(store, tmp_path)
        run(release.if_complete("s", store.manifest.snapshot_id, MESSAGE))  # type: ignore[arg-type]
        assert broker.sent == [] and why in store.done
        audit, outcome = store.marked
        assert isinstance(outcome, SnapshotWithheld) and outcome.withheld == why


def test_chunks_that_do_not_assemble_are_refused_with_an_answer_and_never_released(tmp_path: Any) -> None:
    manifest, parts = snapshot("s")
    store = ReleaseStore(manifest, [parts[0][::-1], *parts[1:]])  # the same sizes, another hash
    release, broker, letters = releasing(store, tmp_path)
    run(release.if_complete("s", manifest.snapshot_id, MESSAGE))  # type: ignore[arg-type]
    assert store.marked == [] and len(letters.sent) == 1 and store.done == [f"refused: {letters.sent[0]}"]
    assert sorted(topic for topic, _ in broker.sent) == ["schoolmig.events", "schoolmig.outcomes"]  # school.rejected; told


@hsettings(max_examples=60, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from([0, 1, 2]), st.integers(0, 50), min_size=1, max_size=3), min_size=1, max_size=6))
def test_a_broker_that_lost_its_data_is_recovered_at_once_and_only_then(looks: list[dict[int, int]]) -> None:
    """Each look at the broker: high-water marks per partition of both marker topics. Modes
    are announced again and syncing schools re-driven exactly on the looks where a mark went
    back; a look where a topic is missing (being made again) decides nothing."""
    sync, operations = monitor(CoordinatorStore())
    sync.settings = sync.settings.model_copy(update={"kafka_bootstrap_servers": "broker:9092"})
    real = sync_module.high_waters
    try:
        _look_at_each(sync, operations, looks)
    finally:
        sync_module.high_waters = real  # type: ignore[assignment]


def _look_at_each(sync: SyncMonitor, operations: Operations, looks: list[dict[int, int]]) -> None:
    expected, seen = 0, {}
    for look in looks:
        marks = {(topic, p): n for topic in (sync.topics.control, sync.topics.events) for p, n in look.items()}

        async def high(bootstrap: str, names: list[str], marks: dict[tuple[str, int], int] = marks) -> Any:
            return marks

        sync_module.high_waters = high  # type: ignore[assignment]
        went_back = any(n > marks[where] for where, n in seen.items() if where in marks)
        expected += went_back
        assert run(sync.check_broker()) is went_back
        seen = marks
    assert operations.modes_announced == expected
    assert operations.redrives == [("a", "n1"), ("b", "n2")] * expected

    async def one_topic(bootstrap: str, names: list[str]) -> Any:
        return {(sync.topics.events, 0): 0}

    sync_module.high_waters = one_topic  # type: ignore[assignment]
    assert run(sync.check_broker()) is False and operations.modes_announced == expected
