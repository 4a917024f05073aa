"""The pure path never raises on what a client sends, and every record is accounted for.

Generated (``tests/hostile.py``), not listed: each family of bad input the issue saw is a
strategy. The same inputs go through the real stack in ``tests/integration/test_hostile_input.py``;
here the claim is the one underneath it, fast: for *any* file and any envelope, the code
answers (released records, quarantine entries, a rejection) and never throws.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.audit import audit_snapshot
from services.ingest.envelope import Rejection, read_envelope
from services.loader.convert import rows_by_table
from services.transform.records import transform_batch
from services.validator.expected import expected_state
from shared.catalog.domains import Domain
from shared.failures.policy import Unusable
from shared.source import jsonsafe
from shared.source.snapshot import UnreadableSnapshot, parse_snapshot
from shared.wire.batching import header, pack, read
from shared.wire.fanout import audit_summary, fanout_batches, plan_fanout
from shared.wire.messages import QuarantineBatch, RawBatch, RowsBatch, SnapshotFormat, SnapshotManifest
from tests.hostile import RAW_GARBAGE, hostile_snapshots, render, spoiled_envelopes

MANIFEST = SnapshotManifest(
    school_id="hostile",
    snapshot_id="s1",
    format=SnapshotFormat.LOCALSTORAGE_DUMP,
    taken_at=datetime(2024, 5, 1, tzinfo=UTC),
    size_bytes=1,
    sha256="0" * 64,
    chunk_count=1,
    chunk_sha256=["0" * 64],
)
SLOW = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SLOW
@given(hostile_snapshots())
def test_any_snapshot_is_released_or_refused_and_every_record_is_accounted_for(
    snapshot: tuple[bytes, SnapshotFormat, int],
) -> None:
    content, fmt, _ = snapshot
    try:
        parsed = parse_snapshot(content, fmt)
    except UnreadableSnapshot:
        return  # dead-lettered whole, with the reason (the file is not one JSON object)
    findings = [f.as_json() for f in audit_snapshot(parsed)]
    summary = audit_summary(parsed).model_dump(mode="json")  # stored in jsonb, sent in events: storable text only
    assert jsonsafe.unrepresentable(summary, max_depth=10) is None and jsonsafe.unrepresentable(findings, max_depth=10) is None
    manifest = MANIFEST.model_copy(update={"format": fmt})
    outgoing = plan_fanout(parsed, manifest)
    assert len(outgoing) == sum(parsed.counts().values())  # one message per source entry

    travelled = 0
    for batch in fanout_batches(
        outgoing, manifest, max_records=50, max_bytes=64 * 1024, max_record_bytes=32 * 1024, timezone="UTC"
    ):
        message = read(batch.body, RawBatch, QuarantineBatch)
        assert not isinstance(message, Unusable), message  # what ingest sends, the next stage can read
        travelled += len(message.entries)  # type: ignore[union-attr]
        if isinstance(message, RawBatch):
            for record in message.records():  # nothing unrepresentable is passed on as data
                assert jsonsafe.unrepresentable(record.record) is None
            transformed = transform_batch(message)
            head = header("rows.batch", message.school_id, message.snapshot_id, message.domain, message.source_ts)
            for body, _ in pack(head, transformed.mapped, max_records=50, max_bytes=1 << 20):
                rows = read(body, RowsBatch)
                assert isinstance(rows, RowsBatch), rows
                try:
                    rows_by_table(rows.records())
                except Exception as exc:  # the loader quarantines it (bisecting): only never a crash
                    assert not isinstance(exc, (SystemError, RecursionError)), exc
            for body, _ in pack(
                {"kind": "quarantine.batch", "school_id": "hostile"}, transformed.quarantined, max_records=50, max_bytes=1 << 20
            ):
                assert isinstance(read(body, QuarantineBatch), QuarantineBatch)
            assert len(transformed.mapped) + len(transformed.quarantined) == len(message.entries)
    assert travelled == len(outgoing)
    expected_state(content, manifest)  # the validator reads the same file the same way


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(RAW_GARBAGE, spoiled_envelopes("hostile")))
def test_any_ingest_message_is_an_envelope_or_a_reasoned_rejection(body: bytes) -> None:
    outcome = read_envelope(body)
    if isinstance(outcome, Rejection):
        assert outcome.reason and outcome.message
    else:  # what is accepted can be stored: every string is storable text
        assert jsonsafe.unrepresentable(outcome.model_dump(mode="json")) is None


@given(st.sampled_from([float("nan"), float("inf"), float("-inf")]), st.sampled_from(list(SnapshotFormat)))
def test_nan_and_infinity_are_quarantined_never_nulled(value: float, fmt: SnapshotFormat) -> None:
    record = {"id": "s-1", "name": "A", "email": "a@x", "balance": value}
    inner = render([record])
    content = (
        f'{{"students": {render(inner)}}}' if fmt is SnapshotFormat.LOCALSTORAGE_DUMP else f'{{"students": {inner}}}'
    ).encode()
    (entry,) = parse_snapshot(content, fmt).entries[Domain.STUDENTS]
    assert entry.problem is not None and entry.problem.reason == "unrepresentable_value"
    assert "$.balance" not in entry.problem.message and "entry 0.balance" in entry.problem.message


def test_a_record_nested_past_the_limit_is_quarantined_and_its_neighbours_travel() -> None:
    deep: object = "leaf"
    for _ in range(60):
        deep = {"x": deep}
    content = render({"students": [{"id": "a", "name": "A"}, {"id": "b", "notes": deep}]}).encode()
    a, b = parse_snapshot(content, SnapshotFormat.MOCKDATA_EXPORT).entries[Domain.STUDENTS]
    assert a.problem is None
    assert b.problem is not None and b.problem.reason == "unrepresentable_value" and b.legacy_id == "b"
