"""The client's side on the real stack: dates in the school's time zone, an answer for every
write a client can read (the outcomes topic, the HTTP API), and refusals that name the field,
the rule and the client's correlation id."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from schoolmig.exporting import live_records
from schoolmig.sdk import build_envelopes, publish_change, publish_snapshot
from schoolmig.stack import Stack
from shared.catalog.domains import Domain
from shared.catalog.ids import row_id_text
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire.messages import Change, ChangeOp
from tests.integration.conftest import API_TOKEN, localstorage_dump, read_topic
from tests.integration.test_coordinator import http

pytestmark = pytest.mark.integration

SKOPJE = "Europe/Skopje"
#: Local days on both DST edges of 2024 (31 March, 27 October), in winter and in summer.
DAYS = [date(2024, 3, 31), date(2024, 10, 27), date(2024, 1, 15), date(2024, 7, 1), date(2024, 3, 30), date(2024, 10, 28)]


def to_iso_string(day: date, zone: str) -> str:
    """What the app stores for a local date: ``new Date(y, m, d).toISOString()`` in ``zone``."""
    moment = datetime.combine(day, clock(0), tzinfo=ZoneInfo(zone)).astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.000Z"


def school_data(zone: str, n: int = 0) -> tuple[dict[str, Any], dict[tuple[str, str, str], date]]:
    """Every domain with a DATE column, its dates written through ``toISOString()`` in ``zone``;
    and the local day each (table, row key, column) must hold."""
    d = [DAYS[(i + n) % len(DAYS)] for i in range(12)]
    w = [to_iso_string(x, zone) for x in d]
    s = f"-{n}"
    data = {
        "teachers": [{"id": f"t{s}", "name": "T", "email": f"t{s}@x", "subject": "Math", "joinDate": w[0]}],
        "classrooms": [{"id": f"room{s}", "name": "Room 1"}],
        "classes": [{"id": f"c{s}", "name": "C", "level": "A1", "teacher": {"id": f"t{s}"}, "roomId": f"room{s}"}],
        "students": [
            {
                "id": f"s{s}",
                "name": "S",
                "email": f"s{s}@x",
                "status": "active",
                "classId": f"c{s}",
                "joinDate": w[1],
                "dateOfBirth": w[2],
                "academicInfo": {"enrollmentDate": w[3]},
            }
        ],
        "paymentObligations": [
            {"id": f"o{s}", "studentId": f"s{s}", "type": "tuition", "amount": 100, "dueDate": w[4], "status": "pending"}
        ],
        "payments": [{"id": f"p{s}", "obligationId": f"o{s}", "amount": 50, "date": w[5], "method": "cash"}],
        "attendance-records": [
            {
                "id": f"a{s}",
                "classId": f"c{s}",
                "sessionDate": w[6],
                "studentRecords": [{"studentId": f"s{s}", "status": "present"}],
            }
        ],
        "assessments": [{"id": f"e{s}", "classId": f"c{s}", "title": "Quiz", "date": w[7]}],
        "grades": [{"id": f"g{s}", "assessmentId": f"e{s}", "studentId": f"s{s}", "value": "90", "dateRecorded": w[8]}],
        "privateLessons": [
            {
                "id": f"l{s}",
                "studentId": f"s{s}",
                "teacherId": f"t{s}",
                "classroomId": f"room{s}",
                "subject": "Math",
                "date": w[9],
                "startTime": "10:00",
                "endTime": "11:00",
                "status": "scheduled",
                "paymentObligation": {"amount": 20, "status": "pending", "dueDate": w[10]},
                "paymentRecords": [{"amount": 20, "paymentDate": w[11], "method": "card"}],
            }
        ],
    }
    expected = {
        ("teachers", f"t{s}", "join_date"): d[0],
        ("students", f"s{s}", "join_date"): d[1],
        ("students", f"s{s}", "date_of_birth"): d[2],
        ("students", f"s{s}", "enrollment_date"): d[3],
        ("payment_obligations", f"o{s}", "due_date"): d[4],
        ("payments", f"p{s}", "payment_date"): d[5],
        ("attendance_records", f"a{s}:s{s}", "date"): d[6],
        ("assessments", f"e{s}", "date"): d[7],
        ("grades", f"g{s}", "date_recorded"): d[8],
        ("private_lessons", f"l{s}", "lesson_date"): d[9],
        ("private_lesson_payment_obligations", f"l{s}:obligation", "due_date"): d[10],
        ("private_lesson_payments", f"l{s}:payment:0", "payment_date"): d[11],
    }
    return data, expected


async def stored_dates(pool: asyncpg.Pool, school: str, expected: dict[tuple[str, str, str], date]) -> dict[Any, Any]:
    found = {}
    for table, key, column in expected:
        found[(table, key, column)] = await pool.fetchval(
            f'SELECT "{column}" FROM "{table}" WHERE id = $1', row_id_text(school, table, key)
        )
    return found


async def publish(settings: Settings, school: str, data: dict[str, Any], *, device: str, zone: str | None, at: datetime) -> str:
    assert settings.kafka_bootstrap_servers
    manifest = await publish_snapshot(
        settings.kafka_bootstrap_servers,
        settings.resolved_ingest_topic,
        school,
        localstorage_dump(**data),
        taken_at=at,
        device_id=device,
        timezone=zone,
    )
    return manifest.snapshot_id


async def report_of(pool: asyncpg.Pool, school: str, snapshot: str, phases: set[str], timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    report = None
    while time.monotonic() < deadline:
        report = await pool.fetchval(
            "SELECT report FROM migration.reports WHERE school_id = $1 AND snapshot_id = $2", school, snapshot
        )
        if report is not None and report["phase"] in phases:
            return dict(report)
        await asyncio.sleep(0.25)
    raise AssertionError(f"{school}/{snapshot}: no report in {phases} within {timeout_s}s (last: {report})")


async def outcomes(settings: Settings, school: str, want: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The school's messages on the outcomes topic (what its clients may read)."""
    assert settings.kafka_bootstrap_servers
    deadline = time.monotonic() + timeout_s
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        every = await read_topic(
            settings.kafka_bootstrap_servers,
            Topics.from_settings(settings).outcomes,
            want=10_000,
            group=f"it-{uuid.uuid4()}",
            timeout_s=2,
        )
        found = [m for m in every if m.get("school_id") == school]
        if len(found) >= want:
            break
    return found


async def test_dates_written_east_of_utc_land_on_the_schools_own_days_and_export_as_written(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-skopje"
    data, expected = school_data(SKOPJE)
    snapshot = await publish(settings, school, data, device="office", zone=SKOPJE, at=datetime(2024, 11, 1, tzinfo=UTC))
    report = await report_of(pool, school, snapshot, {"validated"})
    assert report["validation_ok"]
    assert await stored_dates(pool, school, expected) == expected  # each on its local day, across both DST changes
    audit = await pool.fetchval(
        "SELECT audit FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2", school, snapshot
    )
    assert (audit["timezone"], audit["timezone_source"]) == (SKOPJE, "client")

    # Export gives every date back byte for byte as the app wrote it.
    exported = await live_records(pool, school)
    student = next(r for r in exported[Domain.STUDENTS] if r["id"] == "s-0")
    assert student["dateOfBirth"] == data["students"][0]["dateOfBirth"]
    assert student["academicInfo"]["enrollmentDate"] == data["students"][0]["academicInfo"]["enrollmentDate"]
    lesson = next(r for r in exported[Domain.PRIVATE_LESSONS] if r["id"] == "l-0")
    assert lesson["paymentRecords"][0]["paymentDate"] == data["privateLessons"][0]["paymentRecords"][0]["paymentDate"]

    # A second browser set to UTC: an audit note; its dates are read in the school's zone all the same.
    more, more_expected = school_data(SKOPJE, n=1)
    tablet = await publish(settings, school, more, device="tablet", zone="UTC", at=datetime(2024, 11, 2, tzinfo=UTC))
    await report_of(pool, school, tablet, {"validated"})
    assert await stored_dates(pool, school, more_expected) == more_expected
    findings = await pool.fetchval(
        "SELECT findings FROM migration.audits WHERE school_id = $1 AND snapshot_id = $2", school, tablet
    )
    notes = [f for f in findings if f["type"] == "device_timezone"]
    assert [(n["field"], n["severity"]) for n in notes] == [("tablet", "warning")]
    assert "UTC" in notes[0]["detail"] and SKOPJE in notes[0]["detail"]

    # A change writing a date through toISOString() too.
    assert settings.kafka_bootstrap_servers
    changed = {**data["students"][0], "dateOfBirth": to_iso_string(date(2011, 3, 27), SKOPJE)}  # the DST day of 2011
    await publish_change(
        settings.kafka_bootstrap_servers,
        settings.resolved_ingest_topic,
        school,
        "office",
        Change(op=ChangeOp.UPDATE, domain=Domain.STUDENTS, record_id="s-0", record=changed, source_ts=datetime.now(UTC), seq=1),
        timezone=SKOPJE,
    )
    row = row_id_text(school, "students", "s-0")
    for _ in range(120):
        if await pool.fetchval("SELECT date_of_birth FROM students WHERE id = $1", row) == date(2011, 3, 27):
            break
        await asyncio.sleep(0.25)
    assert await pool.fetchval("SELECT date_of_birth FROM students WHERE id = $1", row) == date(2011, 3, 27)


async def test_an_operators_zone_wins_over_the_clients_and_is_fixed_once_records_are_mapped(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    school = "it-zone-set"
    base = f"{stack.api_url}/schools/{school}/timezone"
    status, answer = await http("POST", base, token=API_TOKEN, body={"timezone": "Mars/Olympus"})
    assert status == 400 and "unknown_timezone" in answer["error"]
    status, answer = await http(
        "POST", base, token=API_TOKEN, body={"timezone": SKOPJE, "actor": "ana", "reason": "the school is in Skopje"}
    )
    assert status == 202, answer
    data, expected = school_data(SKOPJE, n=2)
    snapshot = await publish(settings, school, data, device="laptop", zone="UTC", at=datetime(2024, 11, 1, tzinfo=UTC))
    await report_of(pool, school, snapshot, {"validated"})
    assert await stored_dates(pool, school, expected) == expected
    audit = await pool.fetchval(
        "SELECT audit FROM migration.snapshots WHERE school_id = $1 AND snapshot_id = $2", school, snapshot
    )
    assert (audit["timezone"], audit["timezone_source"]) == (SKOPJE, "operator")

    status, answer = await http("POST", base, token=API_TOKEN, body={"timezone": "America/New_York"})
    assert status == 409 and f"mapped in {SKOPJE} already" in answer["outcome"]
    assert await pool.fetchval("SELECT zone FROM migration.school_zones WHERE school_id = $1", school) == SKOPJE
    status, _ = await http("POST", base, token=API_TOKEN, body={"timezone": SKOPJE})
    assert status == 202


async def test_every_snapshot_gets_a_report_ready_a_client_can_read(stack: Stack, settings: Settings, pool: asyncpg.Pool) -> None:
    """Validated, superseded (read before its device's newer one: no snapshot.released for it)
    and refused (too large) alike."""
    assert settings.kafka_bootstrap_servers
    school = "it-answers"
    data, _ = school_data("UTC", n=3)
    newer = await publish(settings, school, data, device="pc", zone="UTC", at=datetime(2024, 11, 2, tzinfo=UTC))
    await report_of(pool, school, newer, {"validated"})
    older = await publish(settings, school, data | {"grades": []}, device="pc", zone="UTC", at=datetime(2024, 11, 1, tzinfo=UTC))
    await report_of(pool, school, older, {"superseded"})
    huge, _ = build_envelopes(b"{}", school, snapshot_id="too-large-1")
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        body = huge.model_copy(update={"size_bytes": settings.max_snapshot_bytes + 7}).model_dump_json().encode()
        await producer.send_and_wait(settings.resolved_ingest_topic, body, key=school.encode())
    finally:
        await producer.stop()

    found = await outcomes(settings, school, want=3)
    ready = {m["snapshot_id"]: m for m in found if m["type"] == "report.ready"}
    assert ready[newer]["phase"] == "validated"
    assert (ready[older]["phase"], ready[older]["reason"]) == ("superseded", "superseded")
    assert newer in ready[older]["message"]
    assert (ready["too-large-1"]["phase"], ready["too-large-1"]["reason"]) == ("refused", "snapshot_too_large")
    events = await read_topic(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).events,
        want=10_000,
        group=f"it-{uuid.uuid4()}",
        timeout_s=3,
    )
    mine = [(e["type"], e.get("snapshot_id")) for e in events if e.get("school_id") == school]
    assert ("snapshot.released", older) not in mine and ("snapshot.withheld", older) in mine
    assert ("snapshot.released", newer) in mine


async def test_each_change_gets_its_outcome_from_the_api_and_on_the_outcomes_topic(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    assert settings.kafka_bootstrap_servers
    school, client = "it-outcomes", "phone-1"
    data, _ = school_data("UTC", n=4)
    snapshot = await publish(settings, school, data, device=client, zone="UTC", at=datetime(2024, 11, 1, tzinfo=UTC))
    await report_of(pool, school, snapshot, {"validated"})
    student = data["students"][0]
    t = datetime(2025, 1, 1, tzinfo=UTC)

    def change(seq: int, op: ChangeOp, record: dict[str, Any] | None, at: int, domain: Domain = Domain.STUDENTS) -> Change:
        rid = str(record["id"]) if record else "s-4"
        return Change(op=op, domain=domain, record_id=rid, record=record, source_ts=t + timedelta(seconds=at), seq=seq)

    orphan = {"id": "p-orphan", "obligationId": "o-nobody", "amount": 5, "date": "2025-01-01", "method": "cash"}
    sent = [
        change(1, ChangeOp.UPDATE, {**student, "name": "newer"}, at=10),  # applied
        change(2, ChangeOp.UPDATE, {**student, "name": "older"}, at=5),  # superseded by 1 (arrives after it)
        change(3, ChangeOp.CREATE, {**student, "id": "s-gone", "email": "gone@x"}, at=1),
        change(4, ChangeOp.DELETE, None, at=2),  # a delete of s-4: newer than the snapshot, older than 1: superseded
        change(5, ChangeOp.UPDATE, {**student, "status": "graduated"}, at=20),  # quarantined: not a status
        change(6, ChangeOp.CREATE, orphan, at=1, domain=Domain.PAYMENTS),  # waiting for its obligation
    ]
    for c in sent:
        await publish_change(settings.kafka_bootstrap_servers, settings.resolved_ingest_topic, school, client, c)
    # s-gone's create is announced applied first; its deletion then overtakes it (announced again).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        told = await outcomes(settings, school, want=1, timeout_s=2)
        if any(m.get("seq") == 3 and m.get("outcome") == "applied" for m in told):
            break
    else:
        raise AssertionError("seq 3 was never announced applied")
    deleted = Change(op=ChangeOp.DELETE, domain=Domain.STUDENTS, record_id="s-gone", source_ts=t + timedelta(seconds=3), seq=7)
    await publish_change(settings.kafka_bootstrap_servers, settings.resolved_ingest_topic, school, client, deleted)

    want = {1: "applied", 2: "superseded", 3: "deleted", 4: "superseded", 5: "quarantined", 6: "waiting", 7: "applied"}
    answers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = await http("GET", f"{stack.api_url}/schools/{school}/changes?client_id={client}")
        assert status == 200
        answers = {c["seq"]: c for c in body["changes"]}
        if {s: a["outcome"] for s, a in answers.items()} == want:
            break
        await asyncio.sleep(0.5)
    assert {s: a["outcome"] for s, a in answers.items()} == want
    assert answers[2]["by"] == f"chg.{client}.1" and answers[3]["by"] == f"chg.{client}.7"
    assert answers[5]["reason"] == "invalid_enum" and answers[5]["message"].startswith("'status' is …")  # never the value
    assert answers[6]["waiting_for"] and "payment_obligations" in answers[6]["waiting_for"][0]
    status, one = await http("GET", f"{stack.api_url}/schools/{school}/changes/{client}/2")
    assert status == 200 and one["outcome"] == "superseded"
    status, _ = await http("GET", f"{stack.api_url}/schools/{school}/changes/{client}/99")
    assert status == 404

    # The same answers on the topic a client may read, each change's latest one last (an applied
    # change a newer change overtook after it was announced is announced again).
    deadline = time.monotonic() + 30
    latest: dict[int, str] = {}
    while time.monotonic() < deadline and latest != want:
        found = await outcomes(settings, school, want=len(want) + 1)
        latest = {m["seq"]: m["outcome"] for m in found if m["type"] == "change.outcome"}
    assert latest == want


async def test_a_refused_change_message_is_answered_with_the_field_the_rule_and_its_correlation_id(
    stack: Stack, settings: Settings, pool: asyncpg.Pool
) -> None:
    """confluent-kafka, as a client team writes it: three different mistakes, three different answers."""
    from confluent_kafka import Producer

    school = "it-refusals"
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": False})
    base = {"op": "update", "domain": "students", "record_id": "s-1", "source_ts": "2025-01-01T00:00:00Z", "seq": 1}
    mistakes = {
        "corr-no-record": {**base},
        "corr-other-id": {**base, "record": {"id": "s-2"}},
        "corr-delete-with-record": {**base, "op": "delete", "record": {"id": "s-1"}},
        "corr-bad-domain": {**base, "domain": "pupils", "record": {"id": "s-1"}},
    }
    for correlation, change in mistakes.items():
        message = {"kind": "changes", "school_id": school, "client_id": "web", "changes": [change]}
        producer.produce(
            settings.resolved_ingest_topic,
            json.dumps(message).encode(),
            key=school.encode(),
            headers=[("correlation_id", correlation.encode())],
        )
    assert producer.flush(10) == 0
    found = await outcomes(settings, school, want=len(mistakes))
    refused = {m["correlation_id"]: m for m in found if m["type"] == "message.refused"}
    rules = {c: [(e["field"], e["rule"]) for e in m["errors"]] for c, m in refused.items()}
    assert rules == {
        "corr-no-record": [("changes.0.record", "record_required_for_create_and_update")],
        "corr-other-id": [("changes.0.record.id", "record_id_mismatch")],
        "corr-delete-with-record": [("changes.0.record", "delete_carries_no_record")],
        "corr-bad-domain": [("changes.0.domain", "enum")],
    }
    assert "students" in refused["corr-bad-domain"]["errors"][0]["allowed"]
    assert all(m["school_id"] == school and m["client_id"] == "web" and m["seqs"] == [1] for m in refused.values())
    assert settings.kafka_bootstrap_servers
    letters = await read_topic(
        settings.kafka_bootstrap_servers,
        Topics.from_settings(settings).deadletter,
        want=10_000,
        group=f"it-{uuid.uuid4()}",
        timeout_s=3,
    )
    kept = {d["correlation_id"]: d for d in letters if d.get("school_id") == school}
    assert set(kept) == set(mistakes) and all(d["stage"] == "ingest" and d["errors"] for d in kept.values())
