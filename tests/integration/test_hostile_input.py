"""Bad input through the real stack: over a thousand generated hostile inputs never stall anything.

The inputs come from ``tests/hostile.py`` (hypothesis strategies, derandomised so a failure
replays): garbage and spoiled envelopes with hostile headers, messages past the contract's
size, snapshots whose records hold what the pipeline cannot carry (both file formats), and
chunks with a wrong hash sent before the right one. The claims:

- every message is dead-lettered with a reason or taken (a valid envelope); every record of
  a hostile snapshot is loaded or quarantined with a reason; nothing is looped on (the
  services' logs show no retry beyond ``SCHOOLMIG_MAX_ATTEMPTS`` and no ``handler_failed``:
  every input had a specific reason);
- a ``reply_to`` header makes no service publish anything;
- a valid school on another partition, sent while the flood is read, is not held up, and a
  valid school published after it all migrates.

The times (a valid school alone, beside the flood, after it) and the counts by reason are
written to ``.bench/hostile.json`` for the closing note; they are not asserted tightly
(noisy machines), only bounded far above the ~5 s a small school takes.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from schoolmig.runner import send_override, wait_for_report
from schoolmig.sdk import build_envelopes
from schoolmig.stack import Stack
from services.ingest.envelope import Rejection, read_envelope
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire import chunks
from shared.wire.messages import SnapshotChunk, SnapshotFormat, SnapshotManifest
from tests.hostile import RAW_GARBAGE, hostile_headers, hostile_snapshots, spoiled_envelopes
from tests.integration.conftest import ServiceLogs, localstorage_dump, read_topic

FLOOD_PARTITION = 0  # every hostile message goes here; the bystander school to another one
ROOT = Path(__file__).resolve().parents[2]


def collect(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """``n`` generated examples (derandomised: the same on every run, so a failure replays)."""
    found: list[Any] = []

    @hsettings(
        max_examples=n,
        database=None,
        derandomize=True,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def take(example: Any) -> None:
        found.append(example)

    take()
    return found


def small_school(tag: str, **more: Any) -> bytes:
    return localstorage_dump(
        **more,
        students=[
            {
                "id": f"{tag}-s{i}",
                "name": f"Student {i}",
                "email": f"{tag}{i}@x.example",
                "status": "active",
                "joinDate": "2024-01-01",
                "dateOfBirth": "2010-01-01",
            }
            for i in range(20)
        ],
        teachers=[{"id": f"{tag}-t1", "name": "Teacher", "email": f"{tag}-t@x.example", "subjects": ["Math"]}],
    )


def envelopes(content: bytes, school_id: str, fmt: SnapshotFormat) -> tuple[SnapshotManifest, list[SnapshotChunk]]:
    """Manifest and chunks without reading the file (a hostile one may not parse at all)."""
    parts = chunks.split(content)
    manifest = SnapshotManifest(
        school_id=school_id,
        snapshot_id="hostile",
        format=fmt,
        taken_at=datetime(2024, 5, 1, tzinfo=UTC),
        size_bytes=len(content),
        sha256=chunks.sha256_hex(content),
        chunk_count=len(parts),
        chunk_sha256=[chunks.sha256_hex(p) for p in parts],
    )
    return manifest, [
        SnapshotChunk(school_id=school_id, snapshot_id="hostile", index=i, data_b64=chunks.encode(p)) for i, p in enumerate(parts)
    ]


async def send(
    producer: AIOKafkaProducer,
    topic: str,
    body: bytes,
    *,
    key: bytes,
    partition: int | None = None,
    headers: list[tuple[str, bytes | None]] | None = None,
) -> tuple[int, int]:
    meta = await producer.send_and_wait(topic, body, key=key, partition=partition, headers=headers or [])
    return meta.partition, meta.offset


async def raw_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every message body on ``topic`` so far."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        await consumer.topics()  # the metadata, for the partitions
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        end = await consumer.end_offsets(parts)
        values: list[bytes] = []
        deadline = time.monotonic() + 10

        async def behind() -> bool:
            return any([await consumer.position(tp) < offset for tp, offset in end.items()])

        while await behind() and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=300)).values():
                values += [m.value or b"" for m in messages]
        assert time.monotonic() < deadline, f"could not read {topic} to its end"
        return values
    finally:
        await consumer.stop()


async def migrated_in(pool: asyncpg.Pool, school_id: str, snapshot_id: str, since: float, timeout_s: float) -> float:
    report = await wait_for_report(pool, school_id, snapshot_id, since + timeout_s)
    assert report is not None and report["phase"] == "validated", (school_id, report and report.get("phase"))
    return round(time.monotonic() - since, 2)


async def test_over_a_thousand_hostile_inputs_never_stall_anything(
    stack: Stack, settings: Settings, pool: asyncpg.Pool, service_logs: ServiceLogs
) -> None:
    assert settings.kafka_bootstrap_servers
    topics = Topics.from_settings(settings)
    internal = [topics.events, topics.operator_commands, topics.validate_commands, topics.control, *topics.raw_topics]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * 1024 * 1024, compression_type="zstd"
    )
    await producer.start()
    figures: dict[str, Any] = {}
    try:
        # A valid school on the quiet stack: what "normal time" is, measured here (after one
        # to warm up: the first school of a run also waits for consumers to join).
        for tag in ("warm", "calm"):
            content = small_school(tag)
            calm, calm_parts = build_envelopes(content, f"it-h-{tag}")
            began = time.monotonic()
            for part in (calm, *calm_parts):
                await send(producer, topics.ingest, part.model_dump_json().encode(), key=f"it-h-{tag}".encode())
            figures[f"{tag}_s"] = await migrated_in(pool, f"it-h-{tag}", calm.snapshot_id, began, 90)
        figures["alone_s"] = figures.pop("calm_s")

        # The flood: garbage and spoiled envelopes with hostile headers, and a few huge messages.
        bodies = collect(st.one_of(RAW_GARBAGE, spoiled_envelopes("it-h-env")), 800)
        headers = collect(hostile_headers(internal), len(bodies))
        huge = [b'{"kind":"snapshot.chunk","pad":"' + b"x" * size + b'"}' for size in (800 * 1024, 1536 * 1024, 3 * 1024 * 1024)]
        flood = [*zip(bodies, headers, strict=False), *((h, [("x", b"\xff")]) for h in huge)]
        sent: list[tuple[bytes, tuple[int, int]]] = []
        # The bystander: a valid school on another partition, sent as the flood begins.
        side, side_parts = build_envelopes(small_school("side"), "it-h-side")
        side_began = time.monotonic()
        for part in (side, *side_parts):
            await send(producer, topics.ingest, part.model_dump_json().encode(), key=b"it-h-side", partition=1)
        flood_began = time.monotonic()
        for i, (body, hs) in enumerate(flood):
            sent.append(
                (body, await send(producer, topics.ingest, body, key=f"k{i}".encode(), partition=FLOOD_PARTITION, headers=hs))
            )

        # Hostile snapshots (valid envelopes, hostile contents) and chunk games.
        hostile = collect(hostile_snapshots(), 40)
        spoiled_total = sum(n for _, _, n in hostile)
        for i in range(len(hostile)):  # hostile content may well hold a critical audit finding: let it past, as an operator would
            await send_override(settings.kafka_bootstrap_servers, settings, f"it-h-snap-{i}", "hostile", "hostile on purpose")
        for i, (content, fmt, _) in enumerate(hostile):
            manifest, parts = envelopes(content, f"it-h-snap-{i}", fmt)
            for part in (manifest, *parts):
                sent.append(
                    (
                        part.model_dump_json().encode(),
                        await send(producer, topics.ingest, part.model_dump_json().encode(), key=b"h", partition=FLOOD_PARTITION),
                    )
                )
        chunk_games = []
        for i in range(5):  # a wrong chunk first (before the manifest for some, after it for others), then the right one
            school = f"it-h-chunk-{i}"
            manifest, parts = build_envelopes(small_school(f"c{i}"), school)
            chunk_games.append(manifest)
            wrong = parts[0].model_copy(update={"data_b64": base64.b64encode(b'{"students":"[]"}').decode()})
            order = [wrong, manifest, *parts] if i % 2 else [manifest, wrong, *parts]
            for part in order:
                sent.append(
                    (
                        part.model_dump_json().encode(),
                        await send(
                            producer,
                            topics.ingest,
                            part.model_dump_json().encode(),
                            key=school.encode(),
                            partition=FLOOD_PARTITION,
                        ),
                    )
                )
        # One record with a NUL in its id, one with NaN: each quarantined, the rest of the school migrates.
        nul, nul_parts = build_envelopes(
            small_school("nul", grades=[{"id": "g\x00x", "value": 1}, {"id": "g2", "value": float("nan")}]), "it-h-nul"
        )
        for part in (nul, *nul_parts):
            sent.append(
                (
                    part.model_dump_json().encode(),
                    await send(
                        producer, topics.ingest, part.model_dump_json().encode(), key=b"it-h-nul", partition=FLOOD_PARTITION
                    ),
                )
            )
        # A valid school whose messages carry broken headers and a reply_to: taken all the same.
        odd, odd_parts = build_envelopes(small_school("odd"), "it-h-odd-headers")
        for part in (odd, *odd_parts):
            await send(
                producer,
                topics.ingest,
                part.model_dump_json().encode(),
                key=b"it-h-odd",
                partition=FLOOD_PARTITION,
                headers=[("x", b"\xff\xfe"), ("y", None), ("reply_to", topics.operator_commands.encode())],
            )
        figures["flood_messages"] = len(sent)
        figures["beside_flood_s"] = await migrated_in(pool, "it-h-side", side.snapshot_id, side_began, 120)

        # After it all, on the flooded partition: a valid school still migrates.
        after, after_parts = build_envelopes(small_school("after"), "it-h-after")
        after_began = time.monotonic()
        for part in (after, *after_parts):
            await send(producer, topics.ingest, part.model_dump_json().encode(), key=b"it-h-after", partition=FLOOD_PARTITION)
        figures["after_flood_s"] = await migrated_in(pool, "it-h-after", after.snapshot_id, after_began, 180)
        figures["flood_read_s"] = round(time.monotonic() - flood_began, 1)
        await migrated_in(pool, "it-h-odd-headers", odd.snapshot_id, flood_began, 60)
        await migrated_in(pool, "it-h-nul", nul.snapshot_id, flood_began, 60)
        nul_quarantine = await pool.fetch(
            "SELECT record_index, reason, message FROM migration.quarantine"
            " WHERE school_id = 'it-h-nul' AND domain = 'grades' ORDER BY record_index"
        )
        assert [(q["record_index"], q["reason"]) for q in nul_quarantine] == [
            (0, "unrepresentable_value"),
            (1, "unrepresentable_value"),
        ]
        assert "NUL" in nul_quarantine[0]["message"] and "nan" in nul_quarantine[1]["message"]
        for manifest in chunk_games:
            await migrated_in(pool, manifest.school_id, manifest.snapshot_id, time.monotonic(), 60)
    finally:
        await producer.stop()

    # Every message on the flooded partition: dead-lettered with a reason, or a valid envelope taken.
    letters = await read_topic(settings.kafka_bootstrap_servers, topics.deadletter, want=10**6, group="it-h-dl", timeout_s=8)
    on_ingest = {(d["partition"], d["offset"]): d for d in letters if d["topic"] == topics.ingest}
    reasons: Counter[str] = Counter()
    for body, position in sent:
        letter = on_ingest.get(position)
        if letter is not None:
            assert letter["reason"] and letter["message"], letter
            reasons[letter["reason"]] += 1
        else:
            assert not isinstance(read_envelope(body), Rejection), (position, body[:200])
            reasons["taken"] += 1
    assert "handler_failed" not in reasons, reasons  # every bad input had its own reason, none needed the backstop
    big = await pool.fetch(
        'SELECT topic, partition, "offset" FROM migration.dead_letter_payloads WHERE topic = $1', topics.ingest
    )
    assert len(big) >= len(huge)  # too large for a dead letter: kept in PostgreSQL, referenced

    # Every record of every hostile snapshot: loaded or quarantined, with the counts adding up.
    quarantined: Counter[str] = Counter()
    for i in range(len(hostile)):
        school = f"it-h-snap-{i}"
        report = await wait_for_report(pool, school, "hostile", time.monotonic() + 60, overridden=True)
        released = await pool.fetchval("SELECT released_at IS NOT NULL FROM migration.snapshots WHERE school_id = $1", school)
        if not released:  # the file as a whole is unreadable (nested past what any parser reads): dead-lettered whole
            assert await pool.fetchval("SELECT count(*) FROM migration.snapshots WHERE school_id = $1", school) == 1
            quarantined["whole snapshot dead-lettered"] += 1
            continue
        assert report is not None, school
        for domain, counts in report["domains"].items():
            assert counts["source"] == counts["loaded"] + counts["quarantined"], (
                school,
                domain,
                counts,
                report.get("phase"),
                report.get("blocked"),
                report.get("validation"),
            )
        for row in await pool.fetch("SELECT reason FROM migration.quarantine WHERE school_id = $1", school):
            quarantined[row["reason"]] += 1
    assert quarantined["unrepresentable_value"] > 0

    # reply_to made nobody publish: every message on the topics the flood named is a real one
    # (a service answering a reply_to would have published an empty body there).
    for topic in (topics.operator_commands, topics.events, topics.validate_commands, topics.control):
        assert b"" not in await raw_values(settings.kafka_bootstrap_servers, topic), topic
    # No endless retry: no message was tried more often than the bound, by any service.
    retries = [line for _, line in service_logs.lines if "trying again" in line]
    per_position = Counter(m.group(0) for line in retries if (m := re.search(r"\S+\[\d+\]@\d+", line)))
    assert all(n < settings.max_attempts for n in per_position.values()), per_position.most_common(3)

    figures |= {
        "inputs_generated": len(bodies) + len(huge) + spoiled_total + len(hostile) + 5,
        "dead_letters_by_reason": dict(reasons.most_common()),
        "quarantined_by_reason": dict(quarantined.most_common()),
        "spoiled_records": spoiled_total,
    }
    assert figures["inputs_generated"] >= 1000
    out = ROOT / ".bench" / "hostile.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
