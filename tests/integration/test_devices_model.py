"""Several browsers of one school through the real stack, as a hypothesis model.

Three devices grown from one seed; the office is read at onboarding, the others first read
whenever they are (a stale seed, when the others changed it meanwhile). Each device makes
its own creates, updates and deletes, publishes each as a live change (``client_id`` = its
device id) and then a snapshot of its own store, under its ``device_id``. Everything is
delivered with duplicates and the changes shuffled; the devices' snapshots are interleaved
at random, each device's in its own order (what ``shared.ledger.devices`` guarantees:
see its docstring). When everything is through, the live records (``schoolmig.export``, what
``schoolmig export`` rebuilds) are the world's: every record as its last write left it; the
records whose last write was a delete are soft-deleted; and the validator, merging every
device's newest snapshot, finds no issue.
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from schoolmig.export import live_records
from schoolmig.runner import wait_for_report
from schoolmig.sdk import build_envelopes
from schoolmig.stack import Stack
from services.validator.run import validate_school
from shared.catalog.domains import Domain
from shared.platform.settings import Settings
from shared.wire.messages import Change, ChangeBatch, ChangeOp, Severity
from tests.integration.test_live_changes import BASE, CREATABLE, MUTABLE, PARENT, dump_of, mutate, settle

T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
DEVICES = ("office-pc", "tablet-2", "director-laptop")
Store = dict[Domain, dict[str, dict[str, Any]]]


@dataclass
class World:
    snapshots: list[tuple[str, datetime, Store]] = field(default_factory=list)  # (device, read at, its store)
    changes: list[ChangeBatch] = field(default_factory=list)
    truth: dict[tuple[Domain, str], dict[str, Any] | None] = field(default_factory=dict)


def seed() -> Store:
    return {d: {r["id"]: copy.deepcopy(r) for r in records} for d, records in BASE.items()}


@st.composite
def worlds(draw: st.DrawFn) -> World:
    world = World()
    stores = {d: seed() for d in DEVICES}
    world.truth = {(d, i): r for d, records in seed().items() for i, r in records.items()}
    world.snapshots.append((DEVICES[0], T0, copy.deepcopy(stores[DEVICES[0]])))
    read, seq = {DEVICES[0]}, dict.fromkeys(DEVICES, 0)
    moment = T0
    for n in range(draw(st.integers(2, 8))):
        moment += timedelta(minutes=draw(st.integers(1, 60)))
        device = draw(st.sampled_from(DEVICES))
        store = stores[device]
        if device not in read:  # first read: the seed, untouched
            read.add(device)
            world.snapshots.append((device, moment, copy.deepcopy(store)))
            continue
        kind = draw(st.sampled_from(["update", "update", "create", "delete"]))
        if kind == "create":
            domain = draw(st.sampled_from(CREATABLE))
            record_id = f"{domain.value}-{device}-{n}"  # made in the browser: its own id
            parent = draw(st.sampled_from(sorted(store[PARENT[domain]]))) if domain in PARENT else None
            template = dict(BASE[domain][0], id=record_id)
            if domain is Domain.CLASSROOMS:
                template["name"] = f"Room {device} {n}"
            record: dict[str, Any] | None = mutate(domain, template, n, parent)
        else:
            domain = draw(st.sampled_from(MUTABLE))
            record_id = draw(st.sampled_from(sorted(store[domain])))
            parent = draw(st.none() | st.sampled_from(sorted(store[PARENT[domain]]))) if domain in PARENT else None
            record = mutate(domain, store[domain][record_id], n, parent) if kind == "update" else None
        if record is None:
            del store[domain][record_id]
        else:
            store[domain][record_id] = record
        world.truth[(domain, record_id)] = record
        seq[device] += 1
        change = Change(op=ChangeOp(kind), domain=domain, record_id=record_id, record=record, source_ts=moment, seq=seq[device])
        world.changes.append(ChangeBatch(school_id="placeholder", client_id=device, changes=[change]))
        world.snapshots.append((device, moment + timedelta(seconds=1), copy.deepcopy(store)))  # read right after
    return world


_examples = iter(range(1_000_000))


@pytest.mark.parametrize("n", [int(os.environ.get("SCHOOLMIG_DEVICE_EXAMPLES", "3"))])
async def test_several_devices_end_in_the_world_their_last_writes_left(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, n: int
) -> None:
    assert settings.kafka_bootstrap_servers
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.resolved_ingest_topic
    loop = asyncio.get_running_loop()

    @hsettings(
        max_examples=n,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        derandomize=not os.environ.get("SCHOOLMIG_DEVICE_RANDOM"),
        suppress_health_check=list(HealthCheck),
    )
    @given(world=worlds(), order=st.randoms(use_true_random=False))
    def check(world: World, order: random.Random) -> None:
        asyncio.run_coroutine_threadsafe(one_world(world, order), loop).result(timeout=300)

    async def one_world(world: World, order: random.Random) -> None:
        school = f"it-devices-{next(_examples)}"
        onboarding, later = world.snapshots[0], world.snapshots[1:]
        queues = {d: [s for s in later if s[0] == d] for d in DEVICES}
        interleaved = [onboarding]
        while any(queues.values()):  # each device's snapshots in its own order, the devices at random
            interleaved.append(queues[order.choice([d for d in DEVICES if queues[d]])].pop(0))
        published: list[bytes] = []
        last = ""
        for device, taken_at, store in interleaved:
            manifest, parts = build_envelopes(dump_of(store, taken_at), school, taken_at=taken_at, device_id=device)
            published += [p.model_dump_json().encode() for p in (manifest, *parts)]
            last = manifest.snapshot_id
        changes = [b.model_copy(update={"school_id": school}).model_dump_json().encode() for b in world.changes]
        for body in order.sample(changes, k=len(changes)):  # changes anywhere among the snapshots
            published.insert(order.randrange(1, len(published) + 1), body)
        published += order.sample(published, k=len(published) // 3)  # duplicates, after the originals
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for body in published:
                await producer.send_and_wait(topic, body, key=school.encode())
        finally:
            await producer.stop()

        report = await wait_for_report(pool, school, last, time.monotonic() + 150)
        assert report is not None and report["phase"] == "validated", (report or {}).get("validation")
        await settle(settings, pool, school, len(world.changes))

        held = await live_records(pool, school)
        for domain in Domain:
            want = {i: r for (d, i), r in world.truth.items() if d is domain and r is not None}
            got = {str(r["id"]): r for r in held.get(domain, [])}
            assert got == want, (
                domain,
                sorted(got.keys() ^ want.keys()),
                [k for k in got.keys() & want.keys() if got[k] != want[k]],
            )
        deleted = {
            (Domain(r["domain"]), r["legacy_id"])
            for r in await pool.fetch("SELECT domain, legacy_id FROM migration.deleted_records WHERE school_id = $1", school)
        }
        assert deleted == {key for key, record in world.truth.items() if record is None}
        result = await validate_school(pool, school, last, f"devices-{school}", changes_until=datetime.now(UTC))
        issues = [
            (d.domain.value, i.type, i.record_id) for d in result.domains for i in d.issues if i.severity is not Severity.INFO
        ]
        assert result.ok and not issues, issues[:10]

    await asyncio.to_thread(check)
