"""Live migration: change events and successive snapshots converge, whatever their order.

A property-based test (hypothesis) over the real stack: a small, coherent school is
published as its first snapshot; then a random history of creates, updates and deletes by
two clients (some at the same instant, so the version's tie-break decides) and of newer
snapshots of the school is delivered **shuffled, with duplicates**. Changes move records
under other ones (a student to a class, a class to a classroom), some created by changes
that may arrive later, so records wait parked for their parents too. Emails change hands
(handovers, swaps, cycles a -> b -> c -> a at one instant, a student re-created with a deleted
one's email), so writes wait for a unique value another record still holds; classes lose
schedule slots and get them back (children that go and come back). When everything is
through, the database must hold exactly what applying the history in version order gives
(``shared.ledger.versions``): every live record, read back through the reverse mapping
(``schoolmig.export``), equal to the model's; every record the history deleted soft-deleted
(its rows kept); and the validator, replaying the newest snapshot plus the changes after
it, must find no issue at all.
"""

from __future__ import annotations

import asyncio
import copy
import json
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

from schoolmig.demo import school_dump
from schoolmig.export import live_records
from schoolmig.runner import wait_for_report
from schoolmig.sdk import build_envelopes
from schoolmig.stack import Stack
from services.coordinator.lag import consumer_groups, consumer_lag
from services.validator.run import validate_school
from shared.catalog.domains import LOCALSTORAGE_KEYS, Domain
from shared.ledger.accounting import record_counts
from shared.ledger.versions import Version, snapshot_version
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire.messages import Change, ChangeBatch, ChangeOp, Severity

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
KEY_OF = {domain: key for key, domain in LOCALSTORAGE_KEYS.items()}
CLIENTS = ("web-a", "web-b")


def small_school() -> dict[Domain, list[dict[str, Any]]]:
    """Two classes of the demo school with everything they reference and a few students with
    their obligations and payments: every reference resolves, all six related domains."""
    dump = {key: json.loads(value) for key, value in school_dump(1, 3, messy=False).items() if key in LOCALSTORAGE_KEYS}
    classes = [
        dict(c, roomId=c.get("roomId") or next(r["id"] for r in dump["classrooms"] if r["name"] == c["room"]))
        for c in dump["classes"][:2]
    ]
    teacher_ids = {c["teacher"]["id"] for c in classes}
    room_ids = {c["roomId"] for c in classes}
    students = [dict(s, classId=classes[i % 2]["id"]) for i, s in enumerate(dump["students"][:4])]
    student_ids = {s["id"] for s in students}
    obligations = [o for o in dump["paymentObligations"] if o["studentId"] in student_ids][:6]
    obligation_ids = {o["id"] for o in obligations}
    return {
        Domain.CLASSROOMS: [r for r in dump["classrooms"] if r["id"] in room_ids],
        Domain.TEACHERS: [t for t in dump["teachers"] if t["id"] in teacher_ids],
        Domain.CLASSES: classes,
        Domain.STUDENTS: students,
        Domain.PAYMENT_OBLIGATIONS: obligations,
        Domain.PAYMENTS: [p for p in dump["payments"] if p["obligationId"] in obligation_ids],
    }


BASE = small_school()
MUTABLE = (Domain.PAYMENTS, Domain.CLASSROOMS, Domain.STUDENTS, Domain.CLASSES)  # what the history changes
CREATABLE = (Domain.PAYMENTS, Domain.CLASSROOMS, Domain.CLASSES)  # no unique key a copy would repeat


@dataclass
class Event:
    version: Version
    change: Change | None = None  # None: a snapshot of the state at ``version``
    client: str = ""


@dataclass
class History:
    events: list[Event] = field(default_factory=list)

    def changes(self) -> list[Event]:
        return [e for e in self.events if e.change is not None]


def mutate(domain: Domain, record: dict[str, Any], n: int, parent: str | None = None) -> dict[str, Any]:
    """A valid new version of ``record``; ``parent``: a record it is moved under (a student's
    class, a class's classroom), maybe one a change created, maybe not delivered yet. A class
    loses its schedule's later slots, or has them all again (children that go and come back)."""
    record = copy.deepcopy(record)
    if domain is Domain.PAYMENTS:
        record["amount"] = 10 + n
    elif domain is Domain.CLASSROOMS:
        record["capacity"] = 5 + n
    elif domain is Domain.CLASSES:
        record["maxStudents"] = 5 + n
        slots = SLOTS.get(record["id"], SLOTS[BASE[Domain.CLASSES][0]["id"]])
        record["schedule"] = copy.deepcopy(slots[:1] if n % 2 else slots)
        if parent is not None:
            record["roomId"] = parent
    else:
        record["address"] = f"Street {n}"
        if parent is not None:
            record["classId"] = parent
    return record


PARENT = {Domain.STUDENTS: Domain.CLASSES, Domain.CLASSES: Domain.CLASSROOMS}
SLOTS = {c["id"]: c.get("schedule") or [] for c in BASE[Domain.CLASSES]}
#: Unique values changing hands (users' emails): a handover (a gives its email up, b takes it),
#: a swap, a cycle a -> b -> c -> a, all at one instant (in version order, one of them takes a
#: value still held); a student re-created with a deleted one's email.
EMAIL_MOVES = ("handover", "swap", "cycle", "recreate")


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Events in the order they happened (non-decreasing time; two clients may share an
    instant). Records are drawn from what has existed, so updates of deleted records (which
    revive them) and deletes of deleted ones happen too.

    Emails stay unique in every state the history passes through between instants (what a
    browser's app keeps): an event touching students has an instant of its own, the moves of
    ``EMAIL_MOVES`` share one, and a student revived while another holds its email gets a new
    one. So the state the history leaves has no conflict, and the tables must end in it."""
    history = History()
    seq = dict.fromkeys(CLIENTS, 0)
    ever: dict[Domain, list[str]] = {d: [r["id"] for r in BASE[d]] for d in MUTABLE}  # (references: to any of these)
    latest: dict[tuple[Domain, str], dict[str, Any]] = {(d, r["id"]): r for d in MUTABLE for r in BASE[d]}
    alive = {r["id"] for r in BASE[Domain.STUDENTS]}
    moment = T0

    def emit(domain: Domain, record_id: str, record: dict[str, Any] | None, op: ChangeOp) -> None:
        client = draw(st.sampled_from(CLIENTS))
        seq[client] += 1
        if record is not None:
            latest[(domain, record_id)] = record
        change = Change(op=op, domain=domain, record_id=record_id, record=record, source_ts=moment, seq=seq[client])
        history.events.append(Event(Version(moment, client, seq[client]), change, client))

    def email(student: str) -> str:
        return str(latest[(Domain.STUDENTS, student)]["email"])

    for n in range(draw(st.integers(3, 14))):
        moment += timedelta(seconds=draw(st.sampled_from([0, 1, 1, 5])))
        kind = draw(st.sampled_from(["update", "update", "create", "delete", "snapshot", *EMAIL_MOVES]))
        if kind == "snapshot":
            history.events.append(Event(snapshot_version(moment)))
            continue
        if kind in EMAIL_MOVES:
            moment += timedelta(seconds=1)  # an instant of its own
            living = sorted(alive)
            gone = sorted(s for s in ever[Domain.STUDENTS] if s not in alive and email(s) not in {email(a) for a in alive})
            if kind == "recreate" and gone:
                template = latest[(Domain.STUDENTS, draw(st.sampled_from(gone)))]
                emit(Domain.STUDENTS, f"student-new-{n}", dict(template, id=f"student-new-{n}"), ChangeOp.CREATE)
                ever[Domain.STUDENTS].append(f"student-new-{n}")
                alive.add(f"student-new-{n}")
            elif kind != "recreate" and len(living) >= (3 if kind == "cycle" else 2):
                ring = draw(st.permutations(living))[: 3 if kind == "cycle" else 2]
                wanted = {a: email(b) for a, b in zip(ring, [*ring[1:], ring[0]], strict=True)}
                if kind == "handover":
                    wanted = {ring[0]: f"moved-{n}@school.example", ring[1]: email(ring[0])}
                for student in draw(st.permutations(sorted(wanted))):
                    emit(
                        Domain.STUDENTS, student, dict(latest[(Domain.STUDENTS, student)], email=wanted[student]), ChangeOp.UPDATE
                    )
            continue
        if kind == "create":
            domain = draw(st.sampled_from(CREATABLE))
            template = BASE[domain][0]
            record_id = f"{domain.value}-new-{n}"
            parent = draw(st.sampled_from(ever[PARENT[domain]])) if domain in PARENT else None
            record = mutate(
                domain,
                dict(template, id=record_id, **({"name": f"Room new {n}"} if domain is Domain.CLASSROOMS else {})),
                n,
                parent,
            )
            ever[domain].append(record_id)
        else:
            domain = draw(st.sampled_from(MUTABLE))
            record_id = draw(st.sampled_from(ever[domain]))
            parent = draw(st.none() | st.sampled_from(ever[PARENT[domain]])) if domain in PARENT else None
            record = mutate(domain, latest[(domain, record_id)], n, parent) if kind == "update" else None
        if domain is Domain.STUDENTS:
            moment += timedelta(seconds=1)  # an instant of its own
            if record is None:
                alive.discard(record_id)
            else:
                if record_id not in alive and record["email"] in {email(a) for a in alive}:
                    record["email"] = f"revived-{n}@school.example"  # revived: its email went to another
                alive.add(record_id)
        emit(domain, record_id, record, ChangeOp(kind))
    return history


def state_at(history: History, upto: Version | None) -> dict[Domain, dict[str, dict[str, Any]]]:
    """The school after every change with a version below ``upto`` (all, for None), applied
    in version order: the model the pipeline must agree with."""
    state = {d: {r["id"]: r for r in records} for d, records in BASE.items()}
    for event in sorted(history.changes(), key=lambda e: e.version):
        if upto is not None and event.version >= upto:
            break
        change = event.change
        assert change is not None
        if change.op is ChangeOp.DELETE:
            state[change.domain].pop(change.record_id, None)
        else:
            assert change.record is not None
            state[change.domain][change.record_id] = change.record
    return state


def dump_of(state: dict[Domain, dict[str, dict[str, Any]]], taken_at: datetime) -> bytes:
    document = {KEY_OF[d]: json.dumps(list(records.values()), ensure_ascii=False) for d, records in state.items()}
    document["mockDataMetadata"] = json.dumps({"lastUpdated": taken_at.isoformat()})
    return json.dumps(document, ensure_ascii=False).encode()


async def settle(settings: Settings, pool: asyncpg.Pool, school: str, changes: int, timeout_s: float = 90) -> None:
    """Until ingest has every change and no consumer group lags (twice in a row)."""
    assert settings.kafka_bootstrap_servers
    groups = consumer_groups(Topics.from_settings(settings))
    deadline = time.monotonic() + timeout_s
    quiet = 0
    while time.monotonic() < deadline and quiet < 2:
        stored = await pool.fetchval("SELECT count(*) FROM migration.changes WHERE school_id = $1", school)
        lag = await consumer_lag(settings.kafka_bootstrap_servers, groups)
        quiet = quiet + 1 if stored == changes and not any(lag.values()) else 0
        await asyncio.sleep(0.5)
    assert quiet >= 2, f"not settled in {timeout_s}s"


_examples = iter(range(1_000_000))


@pytest.mark.parametrize("n", [int(os.environ.get("SCHOOLMIG_LIVE_EXAMPLES", "6"))])
async def test_any_order_and_any_repeats_of_changes_and_snapshots_end_in_the_state_of_the_history(
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
        derandomize=not os.environ.get("SCHOOLMIG_LIVE_RANDOM"),
        suppress_health_check=list(HealthCheck),
    )
    @given(history=histories(), order=st.randoms(use_true_random=False))
    def check(history: History, order: random.Random) -> None:
        future = asyncio.run_coroutine_threadsafe(one_history(history, order), loop)
        future.result(timeout=240)

    async def one_history(history: History, order: random.Random) -> None:
        school = f"it-live-{next(_examples)}"
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            base = {d: {r["id"]: r for r in records} for d, records in BASE.items()}
            first_manifest, first_parts = build_envelopes(dump_of(base, T0), school, taken_at=T0)
            for part in (first_manifest, *first_parts):  # onboarding: the first snapshot comes first
                await producer.send_and_wait(topic, part.model_dump_json().encode(), key=school.encode())
            messages: list[bytes] = []
            snapshots = [(T0, first_manifest.snapshot_id)]
            for event in history.events:
                if event.change is None:
                    taken_at = event.version.source_ts
                    manifest, parts = build_envelopes(
                        dump_of(state_at(history, event.version), taken_at), school, taken_at=taken_at
                    )
                    snapshots.append((taken_at, manifest.snapshot_id))
                    messages += [p.model_dump_json().encode() for p in (manifest, *parts)]
                else:
                    batch = ChangeBatch(school_id=school, client_id=event.client, changes=[event.change])
                    messages.append(batch.model_dump_json().encode())
            messages += order.sample(messages, k=len(messages) // 3)  # duplicates
            order.shuffle(messages)
            for body in messages:
                await producer.send_and_wait(topic, body, key=school.encode())
        finally:
            await producer.stop()

        newest = max(snapshots)[1]  # (snapshots taken at one instant are ordered by id)
        report = await wait_for_report(pool, school, newest, time.monotonic() + 120)
        if report is None:  # what the database says, for the failure's message
            report = {
                "phase": await pool.fetchrow(
                    "SELECT phase, snapshot_id FROM migration.school_phase WHERE school_id = $1", school
                ),
                "validation": {"domains": []},
                "counts": {d.value: c for d, c in (await record_counts(pool, school, newest) or {}).items() if not c.accounted},
                "ledger": await pool.fetch(
                    "SELECT domain, legacy_id, snapshot_id, source_ts FROM migration.loaded_records WHERE school_id = $1", school
                ),
                "versions": await pool.fetch("SELECT * FROM migration.record_versions WHERE school_id = $1", school),
                "barriers": await pool.fetch("SELECT * FROM migration.barriers WHERE school_id = $1", school),
            }
        assert report["phase"] == "validated", (
            report["phase"],
            report.get("counts"),
            report.get("barriers"),
            report.get("ledger"),
            report.get("versions"),
            [
                (d["domain"], [(i["type"], i["record_id"], i["message"]) for i in d["issues"][:3]])
                for d in (report.get("validation") or {}).get("domains", [])
                if d["issues"]
            ],
        )
        await settle(settings, pool, school, len(history.changes()))

        want = state_at(history, None)
        held = await live_records(pool, school)
        for d, records in want.items():
            got = {str(r["id"]) for r in held.get(d, [])}
            for k in got ^ records.keys():
                print("DIFF", d, k, "db" if k in got else "model")
                for q in (
                    "SELECT * FROM migration.record_versions WHERE school_id = $1 AND legacy_id = $2",
                    "SELECT snapshot_id, source_ts FROM migration.loaded_records WHERE school_id = $1 AND legacy_id = $2",
                    "SELECT snapshot_id, reason, message FROM migration.quarantine WHERE school_id = $1 AND legacy_id = $2",
                    "SELECT snapshot_id, source_ts FROM migration.parked_records WHERE school_id = $1 AND legacy_id = $2",
                    "SELECT id, source_snapshot_id, source_ts FROM classes WHERE school_id = $1 AND legacy_id = $2",
                ):
                    print("   ", await pool.fetch(q, school, k))
        for domain, records in want.items():
            got = {str(r["id"]): r for r in held.get(domain, [])}
            assert got == records, (
                domain,
                sorted(set(got) ^ set(records)),
                [k for k in got.keys() & records.keys() if got[k] != records[k]],
            )
        ever = {(d.value, r["id"]) for d, records in BASE.items() for r in records}
        ever |= {(c.domain.value, c.record_id) for e in history.changes() if (c := e.change)}
        deleted = {
            (r["domain"], r["legacy_id"])
            for r in await pool.fetch("SELECT domain, legacy_id FROM migration.deleted_records WHERE school_id = $1", school)
        }
        live = {(d.value, i) for d, records in want.items() for i in records}
        assert deleted == ever - live, "every record the history deleted is soft-deleted, and only those"
        result = await validate_school(pool, school, newest, f"live-{school}", changes_until=datetime.now(UTC))
        issues = [
            (d.domain.value, i.type, i.record_id) for d in result.domains for i in d.issues if i.severity is not Severity.INFO
        ]
        assert result.ok and not issues, issues[:10]

    await asyncio.to_thread(check)
