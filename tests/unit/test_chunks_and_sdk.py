import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schoolmig.sdk import build_envelopes, new_snapshot_id
from shared import chunks
from shared.messages import (
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


@given(st.lists(st.binary(max_size=20), min_size=2, max_size=6))
def test_every_upload_gets_its_own_snapshot_id_even_a_revert(contents: list[bytes]) -> None:
    """A → B → A: the second A is a new snapshot (newer than B), never taken as the first A again."""
    taken = datetime(2024, 5, 1, tzinfo=UTC)
    ids = [new_snapshot_id("school-a", c, taken) for c in [*contents, contents[0]]]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", i) for i in ids)
    first, _ = build_envelopes(b'{"students": "[]"}', "school-a")
    again, _ = build_envelopes(b'{"students": "[]"}', "school-a", snapshot_id=first.snapshot_id)  # a retry of one upload
    assert again.snapshot_id == first.snapshot_id


def test_source_timestamp_comes_from_the_export_metadata() -> None:
    dump = json.dumps({"mockDataMetadata": json.dumps({"lastUpdated": "2024-05-01T10:00:00.000Z"}), "students": "[]"})
    manifest, _ = build_envelopes(dump.encode(), "school-a")
    assert manifest.taken_at == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_bad_school_id_is_refused_before_publishing() -> None:
    with pytest.raises(ValueError):
        build_envelopes(b"{}", "school a; drop")
    with pytest.raises(ValueError):
        build_envelopes(b"[1]", "school-a")
