"""Nobody outside can drive the migration: forged internal messages are refused, never acted on.

Anyone who can produce to Kafka tries what the issue describes: cut a school over or roll it
back on the command topic (unsigned, with a wrong key, as an unknown operator, signed by a
service instead of an operator), inject a barrier on the public ingest topic, forge a
validation result and a snapshot release on the events topic. Each is dead-lettered with
its reason and counted; the school stays where it was; no barrier acknowledgement appears.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaProducer

from schoolmig.stack import Stack
from shared.catalog.domains import Domain
from shared.platform.settings import Settings
from shared.platform.signing import HEADER, Keyring
from shared.platform.topics import Topics
from shared.wire.messages import Barrier, OperatorCommand, Redrive
from tests.integration.conftest import OPERATOR, OPERATOR_KEY, localstorage_dump, migrate, read_topic


def _signed(keyring: Keyring, topic: str, body: bytes) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in keyring.sign(topic, body).items()]


async def test_forged_commands_barriers_and_events_are_refused(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    school = "it-auth"
    report = await migrate(
        settings,
        pool,
        school,
        localstorage_dump(
            students=[
                {
                    "id": "s-1",
                    "name": "A",
                    "email": "a@x.example",
                    "status": "active",
                    "joinDate": "2024-01-01",
                    "dateOfBirth": "2010-01-01",
                }
            ],
        ),
    )
    assert report["phase"] == "validated"
    transitions_before = await pool.fetchval("SELECT count(*) FROM migration.phase_transitions WHERE school_id = $1", school)

    rollback = OperatorCommand(action="rollback", school_id=school, actor="mallory", reason="forged").model_dump_json().encode()
    cutover = OperatorCommand(action="cutover", school_id=school, actor="mallory", reason="forged").model_dump_json().encode()
    cmd = topics.operator_commands
    service = Keyring.for_service(settings)
    wrong_key = Keyring(f"operator:{OPERATOR}", b"not-the-key", {})
    stranger = Keyring("operator:mallory", b"mallory's own key", {})
    barrier = (
        Barrier(barrier_id=f"forged-{uuid.uuid4().hex[:8]}", school_id=school, topic=topics.ingest, partition=0, origin="mallory")
        .model_dump_json()
        .encode()
    )
    validation = (
        b'{"type":"validation.completed","run_id":"forged","school_id":"it-auth","snapshot_id":"x","ok":true,"domains":[]}'
    )
    raw_batch = (
        b'{"kind":"raw.batch","school_id":"it-auth","snapshot_id":"forged","domain":"students",'
        b'"source_ts":"2024-01-01T00:00:00Z","entries":[{"index":0,"legacy_id":"s-forged","record":{"id":"s-forged",'
        b'"name":"Mallory"},"hints":{}}]}'
    )
    request = b'{"run_id":"forged","school_id":"it-auth","snapshot_id":"x"}'
    operator = Keyring(f"operator:{OPERATOR}", OPERATOR_KEY.encode(), {})
    override = (
        OperatorCommand(
            action="override_audit",
            school_id=school,
            snapshot_id=report["snapshot_id"],
            actor="x",
            reason="signed, then captured and replayed",
        )
        .model_dump_json()
        .encode()
    )
    stale = (
        OperatorCommand(
            action="rollback",
            school_id=school,
            actor="x",
            reason="signed an hour ago",
            issued_at=datetime.now(UTC) - timedelta(hours=1),
        )
        .model_dump_json()
        .encode()
    )
    old_redrive = (
        Redrive(
            school_id=school,
            snapshot_id=report["snapshot_id"],
            reason="asked an hour ago",
            issued_at=datetime.now(UTC) - timedelta(hours=1),
        )
        .model_dump_json()
        .encode()
    )
    ahead_redrive = (
        Redrive(
            school_id=school,
            snapshot_id=report["snapshot_id"],
            reason="stamped a day ahead",
            issued_at=datetime.now(UTC) + timedelta(days=1),
        )
        .model_dump_json()
        .encode()
    )
    forged = [  # (topic, body, headers, the reason it must be refused with)
        (topics.ingest, old_redrive, _signed(service, topics.ingest, old_redrive), "stale_command"),  # a captured request
        (topics.ingest, ahead_redrive, _signed(service, topics.ingest, ahead_redrive), "stale_command"),
        (topics.ingest, old_redrive, [], "unsigned"),
        (cmd, override, _signed(operator, cmd, override), None),  # genuine: acted on
        (cmd, override, _signed(operator, cmd, override), "replayed_command"),  # the same bytes again
        (cmd, stale, _signed(operator, cmd, stale), "stale_command"),
        (topics.raw(Domain.STUDENTS), raw_batch, [], "unsigned"),  # data injected behind the door
        (topics.validate_commands, request, [], "unsigned"),
        (cmd, rollback, [], "unsigned"),
        (cmd, cutover, [(HEADER, b"v1;operator:" + OPERATOR.encode() + b";" + b"0" * 64)], "bad_signature"),
        (cmd, rollback, _signed(wrong_key, cmd, rollback), "bad_signature"),
        (cmd, cutover, _signed(stranger, cmd, cutover), "unknown_principal"),
        (cmd, rollback, _signed(service, cmd, rollback), "not_allowed"),  # services do not give operator commands
        (
            cmd,
            rollback,
            _signed(Keyring(f"operator:{OPERATOR}", b"it-operator-key", {}), topics.events, rollback),
            "bad_signature",
        ),
        (topics.ingest, barrier, [], "unsigned"),
        (topics.events, validation, [], "unsigned"),
        (topics.events, validation, [(HEADER, b"\xff\xfe")], "bad_signature"),
    ]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    sent = {}
    try:
        for topic, body, headers, reason in forged:
            meta = await producer.send_and_wait(topic, body, key=school.encode(), headers=headers)
            if reason is not None:
                sent[(topic, meta.partition, meta.offset)] = reason
    finally:
        await producer.stop()

    deadline = time.monotonic() + 30
    found: dict[tuple[str, int, int], str] = {}
    while time.monotonic() < deadline and len(found) < len(sent):
        letters = await read_topic(
            settings.kafka_bootstrap_servers, topics.deadletter, want=10**6, group=f"it-auth-{uuid.uuid4().hex[:6]}", timeout_s=3
        )
        found = {
            (d["topic"], d["partition"], d["offset"]): d["reason"]
            for d in letters
            if (d["topic"], d["partition"], d["offset"]) in sent
        }
    assert found == sent

    # Nothing was acted on: the school is where it was, its trail unchanged, no forged barrier passed.
    phase = await pool.fetchval("SELECT phase FROM migration.school_phase WHERE school_id = $1", school)
    assert phase == "validated"
    assert (
        await pool.fetchval("SELECT count(*) FROM migration.phase_transitions WHERE school_id = $1", school) == transitions_before
    )
    assert await pool.fetchval("SELECT count(*) FROM migration.barrier_acks WHERE barrier_id LIKE 'forged-%'") == 0
    assert await pool.fetchval("SELECT count(*) FROM users WHERE legacy_id = 's-forged'") == 0
    assert await pool.fetchval("SELECT count(*) FROM migration.validation_runs WHERE run_id = 'forged'") == 0
    # The genuine command was acted on once, as the operator who signed it.
    acted = await pool.fetch("SELECT actor FROM migration.operator_commands WHERE school_id = $1", school)
    assert [a["actor"] for a in acted] == [OPERATOR]
