"""Batches on the wire: every record in exactly one message, in order, within the bounds,
and read back exactly as it went in (generated records, big integers and any text included)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schoolmig.sdk import build_envelopes
from services.transform.records import transform, transform_batch
from shared.catalog.domains import Domain
from shared.catalog.tables import DOMAIN_LOAD_ORDER
from shared.source.snapshot import parse_snapshot
from shared.wire.batching import decode, encode, header, pack
from shared.wire.fanout import fanout_batches, plan_fanout
from shared.wire.messages import MappedRecord, QuarantineBatch, QuarantinedRecord, RawBatch, RawRecord, RowsBatch

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
surrogate_free_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)))


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(st.binary(min_size=1, max_size=300).map(lambda b: encode(b.hex())), max_size=60),
    max_records=st.integers(1, 20),
    max_bytes=st.integers(64, 2_000),
)
def test_pack_puts_every_entry_in_exactly_one_message_within_the_bounds(
    entries: list[bytes], max_records: int, max_bytes: int
) -> None:
    header = {"kind": "quarantine.batch", "school_id": "s"}
    messages = list(pack(header, entries, max_records=max_records, max_bytes=max_bytes))
    seen: list[bytes] = []
    for body, count in messages:
        document = json.loads(body)
        assert {k: document[k] for k in header} == header
        assert len(document["entries"]) == count <= max_records
        assert len(body) <= max_bytes or count == 1  # only a lone entry may be larger
        seen += [encode(e) for e in document["entries"]]
    assert seen == entries


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.dictionaries(surrogate_free_text, json_values, max_size=5), min_size=1, max_size=30),
    big=st.integers(min_value=2**70, max_value=2**90),
)
def test_a_raw_batch_reads_back_exactly_what_went_in(records: list[dict[str, object]], big: int) -> None:
    records[0] = {**records[0], "big": big}  # past 64 bits: a float would lose digits
    head = {
        "kind": "raw.batch",
        "school_id": "s-1",
        "snapshot_id": "n",
        "domain": "grades",
        "source_ts": "2024-06-01T00:00:00+00:00",
    }
    entries = [encode({"index": i, "legacy_id": f"g-{i}", "record": r, "hints": {}}) for i, r in enumerate(records)]
    decoded = [decode(body) for body, _ in pack(head, entries, max_records=7, max_bytes=10_000)]
    assert all(isinstance(b, RawBatch) for b in decoded)
    back = [r for b in decoded for r in b.records()]  # type: ignore[union-attr]
    assert [r.record for r in back] == records
    assert [r.index for r in back] == list(range(len(records)))
    assert all(r.domain is Domain.GRADES and r.source_ts == datetime(2024, 6, 1, tzinfo=UTC) for r in back)


def _snapshot(**domains: object) -> bytes:
    return json.dumps({k: json.dumps(v) for k, v in domains.items()}).encode()


def test_the_fanout_batches_carry_each_record_once_parents_first() -> None:
    content = _snapshot(
        grades=[{"id": f"g-{i}", "assessmentId": "a-1", "studentId": "s-1", "value": i} for i in range(25)],
        students=[{"id": "s-1", "name": "Ана", "email": "a@b"}, "not an object"],
        classrooms=[{"id": "r-1", "name": "A", "capacity": 3}],
    )
    manifest, _ = build_envelopes(content, "school-a")
    outgoing = plan_fanout(parse_snapshot(content, manifest.format), manifest)
    batches = list(fanout_batches(outgoing, manifest, max_records=10, max_bytes=100_000, timezone="UTC"))
    domains = [b.domain for b in batches if b.kind == "raw"]
    assert domains == sorted(domains, key=DOMAIN_LOAD_ORDER.index)  # classrooms, students, then grades
    assert all(b.key == f"school-a/{b.domain.value}".encode() for b in batches)
    raw = [r for b in batches if b.kind == "raw" for r in decode(b.body).records()]  # type: ignore[union-attr]
    quarantined = [q for b in batches if b.kind == "quarantine" for q in decode(b.body).entries]  # type: ignore[union-attr]
    assert sorted((r.domain, r.index) for r in raw) == sorted(
        (o.domain, o.message.index) for o in outgoing if isinstance(o.message, RawRecord)
    )
    assert [q.reason for q in quarantined] == ["not_an_object"]
    assert sum(b.records for b in batches) == len(outgoing) == 28
    assert [b.records for b in batches if b.domain is Domain.GRADES] == [10, 10, 5]


def test_a_transformed_batch_is_what_the_record_by_record_transform_gives() -> None:
    records = [
        {"id": "g-1", "assessmentId": "a-1", "studentId": "s-1", "value": 90},
        {"id": "g-2", "assessmentId": "a-1", "studentId": "s-1", "value": None},
    ]
    batch = RawBatch(
        school_id="s",
        snapshot_id="n",
        domain=Domain.GRADES,
        source_ts=datetime(2024, 1, 1, tzinfo=UTC),
        entries=[{"index": i, "legacy_id": r["id"], "record": r} for i, r in enumerate(records)],
    )  # type: ignore[misc]
    done = transform_batch(batch)
    one_by_one = [transform(r) for r in batch.records()]
    head = header("rows.batch", "s", "n", Domain.GRADES, batch.source_ts)
    rows = [r for body, _ in pack(head, done.mapped, max_records=9, max_bytes=99_999) for r in decode(body).records()]  # type: ignore[union-attr]
    quarantined = [QuarantinedRecord.model_validate_json(q) for q in done.quarantined]
    assert rows == [m for m in one_by_one if isinstance(m, MappedRecord)]
    assert quarantined == [q for q in one_by_one if isinstance(q, QuarantinedRecord)]
    assert len(rows) + len(quarantined) == len(records)


def test_decode_tells_the_kinds_apart_and_refuses_what_is_none() -> None:
    import pytest
    from pydantic import ValidationError

    assert isinstance(decode(b'{"kind":"quarantine.batch","school_id":"s","entries":[]}'), QuarantineBatch)
    assert isinstance(
        decode(
            b'{"kind":"rows.batch","school_id":"s","snapshot_id":"n","domain":"grades",'
            b'"source_ts":"2024-01-01T00:00:00Z","entries":[]}'
        ),
        RowsBatch,
    )
    for body in (b'{"kind":"raw.batch"}', b"[]", b"nope", b'{"kind":"rows.batch","school_id":"../x"}'):
        with pytest.raises(ValidationError):
            decode(body)


def test_what_a_topic_does_not_carry_is_unusable_with_a_reason_that_names_no_value() -> None:
    from shared.failures.policy import Unusable
    from shared.wire.batching import read

    rows = b'{"kind":"rows.batch","school_id":"s","snapshot_id":"n","domain":"grades","source_ts":"2024-01-01T00:00:00Z",'
    cases = {
        b"\xff garbage": "invalid_internal_message",
        b"": "invalid_internal_message",  # a tombstone
        rows
        + b'"entries":[{"index":0,"legacy_id":"g","rows":[{"table":"pg_authid","values":{"id":"x"}}]}]}': "invalid_internal_message",
        rows + b'"entries":[{"index":4294967296,"legacy_id":"g","rows":[]}]}': "invalid_internal_message",
        b'{"kind":"quarantine.batch","school_id":"s","entries":[]}': "unexpected_kind",
    }
    for body, reason in cases.items():
        out = read(body, RowsBatch)
        assert isinstance(out, Unusable) and out.reason == reason, (body, out)
        assert "pg_authid" not in out.detail and "4294967296" not in out.detail
    assert isinstance(read(rows + b'"entries":[]}', RowsBatch), RowsBatch)


def test_a_record_too_large_to_travel_is_quarantined_with_its_reason_not_sent() -> None:
    big = "x" * 5_000
    content = _snapshot(grades=[{"id": "g-1", "comments": big}, {"id": "g-2"}], students=[big])  # the 2nd: not an object
    manifest, _ = build_envelopes(content, "school-a")
    outgoing = plan_fanout(parse_snapshot(content, manifest.format), manifest)
    batches = list(fanout_batches(outgoing, manifest, max_records=10, max_bytes=100_000, max_record_bytes=2_000, timezone="UTC"))
    raw = [r.legacy_id for b in batches if b.kind == "raw" for r in decode(b.body).records()]  # type: ignore[union-attr]
    quarantined = [q for b in batches if b.kind == "quarantine" for q in decode(b.body).entries]  # type: ignore[union-attr]
    assert raw == ["g-2"]
    assert {(q.legacy_id, q.reason) for q in quarantined} == {("g-1", "record_too_large"), (None, "not_an_object")}
    assert all(q.payload is None and "verified backup" in q.message for q in quarantined)
    assert max(len(b.body) for b in batches) < 2_000 + 500

    batch = RawBatch(
        school_id="s",
        snapshot_id="n",
        domain=Domain.GRADES,
        source_ts=datetime(2024, 1, 1, tzinfo=UTC),
        entries=[
            {
                "index": 0,
                "legacy_id": "g-1",
                "record": {"id": "g-1", "assessmentId": "a", "studentId": "s", "value": 1, "comments": big},
            }
        ],
    )  # type: ignore[list-item]
    done = transform_batch(batch, max_entry_bytes=3_000)
    assert done.mapped == [] and [QuarantinedRecord.model_validate_json(q).reason for q in done.quarantined] == [
        "record_too_large"
    ]
