import json

import pytest

from schoolmig.sdk import build_envelopes
from services.ingest.envelope import Rejection, read_envelope
from shared.wire.messages import MAX_INGEST_MESSAGE_BYTES, SnapshotChunk, SnapshotManifest


def test_the_sdk_envelopes_are_accepted() -> None:
    manifest, parts = build_envelopes(b'{"students": "[]"}', "school-a")
    assert read_envelope(manifest.model_dump_json().encode()) == manifest
    assert isinstance(read_envelope(parts[0].model_dump_json().encode()), SnapshotChunk)


def chunk(**overrides: object) -> bytes:
    body = {
        "kind": "snapshot.chunk",
        "schema_version": 1,
        "school_id": "school-a",
        "snapshot_id": "s1",
        "index": 0,
        "data_b64": "e30=",
    }
    body.update(overrides)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"x" * (MAX_INGEST_MESSAGE_BYTES + 1), "oversized"),
        (b"\xff\x00garbage", "invalid_json"),
        (b'{"kind": "snapshot.chunk"', "invalid_json"),
        (chunk(schema_version=2), "unknown_schema_version"),
        (chunk(school_id="school a; drop"), "invalid_school_id"),
        (chunk(school_id=""), "invalid_school_id"),
        (chunk(school_id=17), "invalid_school_id"),
        (chunk(kind="snapshot.change"), "invalid_envelope"),
        (chunk(index=-1), "invalid_envelope"),
        (chunk(data_b64="not base64!"), "invalid_chunk"),
        (b"[1, 2, 3]", "invalid_envelope"),
    ],
)
def test_each_bad_input_has_its_own_reason(body: bytes, reason: str) -> None:
    result = read_envelope(body)
    assert isinstance(result, Rejection) and result.reason == reason


def test_a_manifest_must_hash_every_chunk() -> None:
    manifest, _ = build_envelopes(b'{"students": "[]"}', "school-a")
    body = json.loads(manifest.model_dump_json())
    body["chunk_count"] = 2
    result = read_envelope(json.dumps(body).encode())
    assert isinstance(result, Rejection) and "chunk_sha256" in result.message


def test_messages_name_fields_never_values() -> None:
    result = read_envelope(chunk(snapshot_id="Ана Петровска ана@example.mk"))
    assert isinstance(result, Rejection)
    assert result.message == "snapshot_id: string_pattern_mismatch (String should match pattern '^[A-Za-z0-9_.-]{1,64}$')"
    assert [(e.field, e.rule) for e in result.errors] == [("snapshot_id", "string_pattern_mismatch")]
    assert "Ана" not in result.errors[0].model_dump_json() and "example" not in result.message
    assert isinstance(read_envelope(build_envelopes(b"{}", "s")[0].model_dump_json().encode()), SnapshotManifest)
