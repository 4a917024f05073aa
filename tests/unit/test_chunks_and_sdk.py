import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schoolmig.sdk import build_envelopes, new_snapshot_id
from shared.wire import chunks
from shared.wire.messages import (
    INGEST_ENVELOPE,
    MAX_INGEST_MESSAGE_BYTES,
    SnapshotChunk,
    SnapshotFormat,
)


def test_split_and_assemble_round_trip() -> None:
    content = bytes(range(256)) * 5000
    parts = chunks.split(content, 100_000)
    assert len(parts) == 13 and all(len(p) <= 100_000 for p in parts)
    rebuilt = chunks.assemble(
        parts, chunk_sha256=[chunks.sha256_hex(p) for p in parts], sha256=chunks.sha256_hex(content), size_bytes=len(content)
    )
    assert rebuilt == content


def test_an_empty_file_is_one_empty_chunk() -> None:
    assert chunks.split(b"") == [b""]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("drop", "chunk_count_mismatch"),
        ("flip", "chunk_checksum_mismatch"),
        ("size", "size_mismatch"),
        ("hash", "checksum_mismatch"),
    ],
)
def test_assembly_refuses_anything_but_the_announced_file(tamper: str, reason: str) -> None:
    content = b"x" * 1000 + b"y" * 1000
    parts = chunks.split(content, 700)
    hashes = [chunks.sha256_hex(p) for p in parts]
    size, digest = len(content), chunks.sha256_hex(content)
    if tamper == "drop":
        parts = parts[:-1]
    elif tamper == "flip":
        parts[1] = b"z" + parts[1][1:]
    elif tamper == "size":
        size += 1
    else:
        digest = chunks.sha256_hex(b"other")
    with pytest.raises(chunks.AssemblyError) as caught:
        chunks.assemble(parts, chunk_sha256=hashes, sha256=digest, size_bytes=size)
    assert caught.value.reason == reason


def big_dump() -> bytes:
    students = [{"id": f"student-{i}", "name": "Ана " * 20, "notes": "ж" * 500} for i in range(3000)]
    return json.dumps({"students": json.dumps(students, ensure_ascii=False)}, ensure_ascii=False).encode()


def test_every_message_of_a_large_snapshot_stays_under_the_limit() -> None:
    content = big_dump()
    assert len(content) > 3 * 1024 * 1024
    manifest, parts = build_envelopes(content, "school-a")
    assert manifest.chunk_count == len(parts) > 1
    for part in parts:
        assert len(part.model_dump_json().encode()) < MAX_INGEST_MESSAGE_BYTES
    assert b"".join(chunks.decode(p.data_b64) for p in parts) == content
    assert manifest.format is SnapshotFormat.LOCALSTORAGE_DUMP


def test_the_envelope_parses_back_from_its_json() -> None:
    manifest, parts = build_envelopes(b'{"students": []}', "school-a")
    assert INGEST_ENVELOPE.validate_json(manifest.model_dump_json()) == manifest
    assert isinstance(INGEST_ENVELOPE.validate_json(parts[0].model_dump_json()), SnapshotChunk)


_readings = st.tuples(
    st.binary(max_size=20),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["", "office-pc", "tablet-2"]),
)


@given(st.lists(_readings, min_size=1, max_size=8))
def test_a_snapshot_id_is_the_reading_itself(readings: list[tuple[bytes, datetime, str]]) -> None:
    """One id per reading (content, read time, device): the same reading published again is
    the same snapshot; any other reading, a revert A → B → A read later included, is another.
    Ids sort by read time first (to the microsecond), as the snapshot order does."""
    ids = {r: new_snapshot_id("school-a", *r) for r in readings}
    assert len(set(ids.values())) == len(set(ids))  # different readings, different ids
    assert all(new_snapshot_id("school-a", *r) == i for r, i in ids.items())  # and stable
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", i) for i in ids.values())
    by_time = sorted(ids, key=lambda r: r[1])
    assert [ids[r][:23] for r in by_time] == sorted(ids[r][:23] for r in by_time)


def test_the_read_time_is_the_readers_clock_never_the_apps_last_updated() -> None:
    """``lastUpdated`` is what MockDataService's saves last wrote: kept as metadata only."""
    dump = json.dumps({"mockDataMetadata": json.dumps({"lastUpdated": "2024-05-01T10:00:00.000Z"}), "students": "[]"})
    before = datetime.now(UTC)
    manifest, _ = build_envelopes(dump.encode(), "school-a")
    assert before <= manifest.taken_at <= datetime.now(UTC)
    assert manifest.app_last_updated == datetime(2024, 5, 1, 10, tzinfo=UTC)
    read = datetime(2024, 6, 1, 8, 30, tzinfo=UTC)
    given_time, _ = build_envelopes(dump.encode(), "school-a", taken_at=read, device_id="office-pc")
    again, _ = build_envelopes(dump.encode(), "school-a", taken_at=read, device_id="office-pc")
    assert (given_time.taken_at, given_time.device_id) == (read, "office-pc")
    assert given_time.snapshot_id == again.snapshot_id  # a re-run of one reading: the same snapshot
    with pytest.raises(ValueError, match="time zone"):
        build_envelopes(dump.encode(), "school-a", taken_at=datetime(2024, 6, 1))


def test_bad_school_id_is_refused_before_publishing() -> None:
    with pytest.raises(ValueError):
        build_envelopes(b"{}", "school a; drop")
    with pytest.raises(ValueError):
        build_envelopes(b"[1]", "school-a")
