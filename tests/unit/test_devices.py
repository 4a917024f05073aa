"""A school's several browsers (``shared.ledger.devices``): each record's version from its
device's own history, the school's truth as the greatest version, and the conflicts listed.

The worked examples of the README, then a hypothesis model: devices grown from one seed,
each making its own creates, updates and deletes, each followed by a snapshot of that
device, devices first read late holding a stale seed; whatever order the devices'
snapshots are released in (each device's in its own order, after the school's onboarding
snapshot), the merged truth is the world's: every record as its last write left it, a
record whose last write was a delete deleted.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.ledger.devices import (
    DeviceState,
    Held,
    SchoolContents,
    conflicts,
    content_hash,
    derive,
    merge,
    pack_contents,
    pack_state,
    unpack_contents,
    unpack_state,
)

T0 = datetime(2024, 9, 1, 8, tzinfo=UTC)
SEED = {("students", f"student-{i}"): {"id": f"student-{i}", "name": f"Seed {i}"} for i in range(1, 4)}


class School:
    """Ingest's side of the rule: each device's state and the school's contents, derived in
    the order snapshots are released (as ``device_store.derive_snapshot`` does)."""

    def __init__(self) -> None:
        self.states: dict[str, DeviceState] = {}
        self.contents: SchoolContents = {}

    def release(self, device: str, at: datetime, records: dict[tuple[str, str], dict[str, object]]) -> dict[str, object]:
        previous = self.states.get(device, DeviceState())
        if previous.taken_at is not None and previous.taken_at > at:
            return {"superseded": True}
        done = derive(
            {ref: content_hash(r) for ref, r in records.items()},
            snapshot_id=f"{device}@{at.isoformat()}",
            read_at=at,
            previous=previous,
            contents=self.contents,
        )
        self.states[device], self.contents = done.state, done.contents
        return {"versions": done.versions, "deleted": done.deleted}

    def truth(self) -> dict[tuple[str, str], str | None]:
        """Per record: the winning content's hash, None when deleted."""
        return {ref: None if o.deleted or o.content is None else o.content.content for ref, o in merge(self.states).items()}


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def test_two_browsers_each_adding_a_student_keep_both() -> None:
    school = School()
    office = dict(SEED) | {("students", "student-office"): {"id": "student-office"}}
    tablet = dict(SEED) | {("students", "student-tablet"): {"id": "student-tablet"}}
    school.release("office-pc", at(0), office)
    out = school.release("tablet", at(1), tablet)
    assert out["deleted"] == {}  # the tablet never held the office's student: it says nothing of it
    truth = school.truth()
    assert truth[("students", "student-office")] == content_hash(office[("students", "student-office")])
    assert truth[("students", "student-tablet")] == content_hash(tablet[("students", "student-tablet")])
    # the seed the tablet holds is the office's, not a new write: its version is the office's read time
    assert out["versions"][("students", "student-1")] == at(0)


def test_a_deletion_on_one_device_and_an_edit_on_another_the_later_wins() -> None:
    school = School()
    school.release("office", at(0), dict(SEED))
    school.release("tablet", at(0.5), dict(SEED))
    edited = dict(SEED) | {("students", "student-2"): {"id": "student-2", "name": "Edited"}}
    school.release("tablet", at(2), edited)  # edited on the tablet, seen at day 2
    school.release("office", at(3), {k: v for k, v in SEED.items() if k[1] != "student-2"})  # deleted, seen at day 3
    assert school.truth()[("students", "student-2")] is None
    (conflict,) = conflicts(school.states)
    assert (conflict.legacy_id, conflict.winner) == ("student-2", "deleted")
    assert [(d, what) for d, what, _ in conflict.held] == [("office", "deleted"), ("tablet", "content")]

    school.release("tablet", at(4), edited | {("students", "student-2"): {"id": "student-2", "name": "Again"}})
    assert school.truth()[("students", "student-2")] == content_hash({"id": "student-2", "name": "Again"})  # later edit revives


def test_a_stale_copy_does_not_revive_what_another_device_deleted() -> None:
    school = School()
    school.release("office", at(0), dict(SEED))
    gone = school.release("office", at(1), {k: v for k, v in SEED.items() if k[1] != "student-3"})  # the office deletes it
    assert gone["deleted"] == {("students", "student-3"): at(1)}  # a tombstone at the office's read time
    out = school.release("tablet", at(5), dict(SEED))  # a tablet that never saw it, first dumped later
    assert out["versions"][("students", "student-3")] == at(0)  # the seed's version, not a write at day 5
    assert school.truth()[("students", "student-3")] is None


def test_a_revert_on_one_device_is_a_new_write_and_wins() -> None:
    school = School()
    a = {"id": "student-1", "name": "A"}
    b = {"id": "student-1", "name": "B"}
    school.release("office", at(0), {("students", "student-1"): a})
    school.release("tablet", at(0), {("students", "student-1"): a})
    school.release("office", at(1), {("students", "student-1"): b})
    school.release("tablet", at(2), {("students", "student-1"): {"id": "student-1", "name": "C"}})
    out = school.release("office", at(3), {("students", "student-1"): a})  # A -> B -> A on the office
    assert out["versions"][("students", "student-1")] == at(3)
    assert school.truth()[("students", "student-1")] == content_hash(a)


def test_unchanged_content_keeps_its_version_and_a_late_snapshot_of_a_device_is_superseded() -> None:
    school = School()
    school.release("office", at(0), dict(SEED))
    out = school.release("office", at(7), dict(SEED))
    assert set(out["versions"].values()) == {at(0)}
    assert school.release("office", at(3), {}) == {"superseded": True}  # read before the office's newest
    assert all(v is not None for v in school.truth().values())


def test_the_stored_forms_read_back_equal() -> None:
    state = DeviceState("s", at(1), {("students", "a"): Held("h1", at(1)), ("grades", "g"): Held(None, at(2))})
    assert unpack_state(pack_state(state), "s", at(1)) == state
    contents = {("students", "a", "h1"): at(1), ("grades", "g", "h2"): at(0)}
    assert unpack_contents(pack_contents(contents)) == contents
    assert content_hash({"a": 1, "b": [1, {"c": 2}]}) == content_hash({"b": [1, {"c": 2}], "a": 1})


# ----------------------------------------------------------------------------- the model

DEVICES = ("office", "laptop", "tablet")


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[tuple[str, datetime, dict[tuple[str, str], dict[str, object]]]], dict]:
    """Snapshots (device, read time, records) in time order, and the world's truth: per
    record, the content of its last write (None: deleted). The office is read at onboarding;
    every other device is first read whenever it is, still holding the seed (a stale copy,
    when the others changed it meanwhile); every write on a device is followed by a snapshot."""
    stores = {d: dict(SEED) for d in DEVICES}
    truth: dict[tuple[str, str], dict[str, object] | None] = dict(SEED)
    snapshots = [(DEVICES[0], T0, dict(stores[DEVICES[0]]))]
    read = {DEVICES[0]}
    moment = T0
    for n in range(draw(st.integers(1, 25))):
        moment += timedelta(minutes=draw(st.integers(1, 90)))
        device = draw(st.sampled_from(DEVICES))
        store = stores[device]
        if device not in read:  # its first reading: the seed as it grew it, nothing changed yet
            read.add(device)
            snapshots.append((device, moment, dict(store)))
            continue
        kind = draw(st.sampled_from(["create", "update", "update", "delete"]))
        if kind == "create" or not store:
            ref = ("students", f"student-{device}-{n}")  # ids made in the browser: its own
            store[ref] = truth[ref] = {"id": ref[1], "name": f"new {n}"}
        else:
            ref = draw(st.sampled_from(sorted(store)))
            if kind == "update":
                store[ref] = truth[ref] = {"id": ref[1], "name": f"{device} {n}"}
            else:
                del store[ref]
                truth[ref] = None
        snapshots.append((device, moment, dict(store)))
    return snapshots, truth


@settings(max_examples=300, deadline=None)
@given(world=worlds(), seed=st.integers(0, 2**32 - 1))
def test_any_interleaving_of_the_devices_gives_the_world_as_its_last_writes_left_it(
    world: tuple[list[tuple[str, datetime, dict]], dict], seed: int
) -> None:
    snapshots, truth = world
    onboarding, later = snapshots[:1], snapshots[1:]
    per_device = {d: [s for s in later if s[0] == d] for d in DEVICES}
    rng = random.Random(seed)
    order: list[tuple[str, datetime, dict]] = []
    while any(per_device.values()):  # a random interleaving, each device's own snapshots in order
        device = rng.choice([d for d in DEVICES if per_device[d]])
        order.append(per_device[device].pop(0))
    school = School()
    for device, when, records in [*onboarding, *order]:
        school.release(device, when, records)
    want = {ref: None if record is None else content_hash(record) for ref, record in truth.items()}
    assert school.truth() == want
    for conflict in conflicts(school.states):  # listed for review, and the winner is the world's
        ref = (conflict.domain, conflict.legacy_id)
        assert len(conflict.held) >= 2
        assert (conflict.winner == "deleted") == (want[ref] is None)
    for ref, record in truth.items():  # a record the devices hold differently is always listed
        holding = {s.records[ref].content for s in school.states.values() if ref in s.records}
        assert (len(holding) > 1) == (ref in {(c.domain, c.legacy_id) for c in conflicts(school.states)}), record


def test_a_domain_the_snapshot_does_not_hold_whole_deletes_nothing() -> None:
    """A MockDataService export has no grades; a value cut short holds no ids: neither is a
    deletion of what the device held there (only a value read whole that lacks a record is)."""
    import json

    from shared.ledger.devices import held_records, readable_domains
    from shared.source.snapshot import parse_snapshot
    from shared.wire.messages import SnapshotFormat

    students = [{"id": "student-1", "name": "A"}, {"id": "student-2", "name": "B"}]
    grades = [{"id": "grade-1", "value": 90}]
    dump = {"students": json.dumps(students), "grades": json.dumps(grades)}
    first = parse_snapshot(json.dumps(dump).encode(), SnapshotFormat.LOCALSTORAGE_DUMP)
    previous = derive(held_records(first), snapshot_id="s1", read_at=at(0), previous=DeviceState(), contents={})

    export = {"students": students[:1], "lastUpdated": "2024-01-01T00:00:00.000Z"}  # no grades key at all
    cut = {"students": json.dumps(students[:1]), "grades": '[{"id": "grade-1", "va'}  # grades cut short
    for content, fmt in ((export, SnapshotFormat.MOCKDATA_EXPORT), (cut, SnapshotFormat.LOCALSTORAGE_DUMP)):
        parsed = parse_snapshot(json.dumps(content).encode(), fmt)
        assert "grades" not in readable_domains(parsed) and "students" in readable_domains(parsed)
        done = derive(
            held_records(parsed),
            snapshot_id="s2",
            read_at=at(1),
            previous=previous.state,
            contents=previous.contents,
            readable=readable_domains(parsed),
        )
        assert done.deleted == {("students", "student-2"): at(1)}  # read whole, and without it: deleted
        assert done.state.records[("grades", "grade-1")] == previous.state.records[("grades", "grade-1")]
