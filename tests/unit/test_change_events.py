"""Change events on the pure path: the envelope (``services.ingest.envelope``), what ingest
sends on (``services.ingest.changes``), what the transform makes of it, and what the validator expects
from it (``services.validator.expected.apply_changes``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schoolmig.export import export_document
from services.ingest.changes import change_batches, plan_changes
from services.ingest.envelope import Rejection, read_envelope
from services.transform.records import transform_batch
from services.validator.expected import Expected, StoredChange, apply_changes
from shared.catalog.domains import EXPORT_KEYS, LOCALSTORAGE_KEYS, Domain
from shared.ledger.versions import Version
from shared.source.jsonsafe import unrepresentable
from shared.source.snapshot import parse_snapshot
from shared.wire.batching import decode
from shared.wire.messages import (
    Change,
    ChangeBatch,
    ChangeOp,
    QuarantineBatch,
    RawBatch,
    RowsBatch,
    SnapshotChunk,
    SnapshotFormat,
)
from tests.hostile import render, spoiled_records, templates

T = datetime(2025, 3, 1, 9, tzinfo=UTC)
KEYS = {domain: key for key, domain in LOCALSTORAGE_KEYS.items()}


@st.composite
def change_messages(draw: st.DrawFn) -> tuple[bytes, int]:
    """A change message as a client could send it (JSON text), with valid and spoiled records
    (the spoiled record's id kept, so the message itself stays valid), and how many."""
    changes: list[dict[str, Any]] = []
    for seq in range(1, draw(st.integers(1, 6)) + 1):
        domain = draw(st.sampled_from(list(KEYS)))
        op = draw(st.sampled_from(list(ChangeOp)))
        template = draw(st.sampled_from(templates()[KEYS[domain]]))
        record = None
        if op is not ChangeOp.DELETE:
            record = dict(draw(spoiled_records(KEYS[domain])), id=template["id"]) if draw(st.booleans()) else template
        changes.append(
            {
                "op": op.value,
                "domain": domain.value,
                "record_id": template["id"],
                "record": record,
                "source_ts": (T + timedelta(seconds=seq)).isoformat(),
                "seq": seq,
            }
        )
    message = {"kind": "changes", "schema_version": 1, "school_id": "s1", "client_id": "web-1", "changes": changes}
    return render(message).encode(), len(changes)


@settings(max_examples=150, deadline=None)
@given(change_messages())
def test_every_change_is_sent_on_or_quarantined_once_and_maps_without_raising(message: tuple[bytes, int]) -> None:
    body, count = message
    envelope = read_envelope(body)
    if isinstance(envelope, Rejection):  # a spoiled value the contract itself refuses (e.g. a bad timestamp)
        assert envelope.reason in {"invalid_envelope", "invalid_json", "too_deep"}, envelope
        return
    assert isinstance(envelope, ChangeBatch) and len(envelope.changes) == count
    plan = plan_changes(envelope, max_depth=32)
    sent: list[int] = []
    quarantined: list[int] = []
    for wire in change_batches(envelope, plan, default_ts=T, timezone="UTC", max_records=3, max_bytes=64 * 1024):
        message = decode(wire.body)
        if isinstance(message, RawBatch):
            for record in message.records():
                assert record.change is not None and record.snapshot_id == record.change.change_id
                assert record.source_ts == record.change.source_ts
                assert unrepresentable(record.record, max_depth=32) is None
                sent.append(record.index)
            done = transform_batch(message)  # never raises: each record mapped or quarantined
            assert len(done.mapped) + len(done.quarantined) == len(message.entries)
            for entry in done.mapped:
                rows = RowsBatch.model_validate_json(
                    json.dumps(
                        {
                            "kind": "rows.batch",
                            "school_id": "s1",
                            "snapshot_id": message.snapshot_id,
                            "domain": message.domain.value,
                            "source_ts": message.source_ts.isoformat(),
                            "entries": [json.loads(entry)],
                        }
                    )
                )
                (mapped,) = rows.records()
                assert mapped.change is not None and (mapped.rows == []) == (mapped.change.op is ChangeOp.DELETE)
        else:
            assert isinstance(message, QuarantineBatch)
            quarantined += [q.index for q in message.entries]
            assert all(q.reason == "unrepresentable_value" and q.snapshot_id.startswith("chg.web-1.") for q in message.entries)
    assert sorted(sent + quarantined) == list(range(count))


def test_the_contract_refuses_what_cannot_be_one_change() -> None:
    ok = {"op": "update", "domain": "payments", "record_id": "p1", "record": {"id": "p1"}, "source_ts": T, "seq": 1}
    Change.model_validate(ok)
    for wrong in (
        {"op": "delete"},
        {"record": None},
        {"record": {"id": "p2"}},
        {"record": {"id": True}},
        {"seq": -1},
        {"source_ts": datetime(1800, 1, 1, tzinfo=UTC)},
    ):
        with pytest.raises(ValidationError):
            Change.model_validate({**ok, **wrong})
    with pytest.raises(ValidationError, match="own seq"):
        ChangeBatch(school_id="s", client_id="c", changes=[Change.model_validate(ok), Change.model_validate(ok)])
    with pytest.raises(ValidationError, match="chg"):  # a snapshot may not take a change's name
        SnapshotChunk(school_id="s", snapshot_id="chg.web-1.1", index=0, data_b64="")


def test_a_record_nested_deeper_than_an_envelope_still_travels() -> None:
    record = {"id": "lesson-1", "paymentRecords": [{"id": "x", "meta": {"a": {"b": 1}}}]}
    body = json.dumps(
        {
            "kind": "changes",
            "school_id": "s",
            "client_id": "c",
            "changes": [
                {
                    "op": "create",
                    "domain": "private_lessons",
                    "record_id": "lesson-1",
                    "record": record,
                    "source_ts": T.isoformat(),
                    "seq": 1,
                }
            ],
        }
    ).encode()
    assert isinstance(read_envelope(body), ChangeBatch)


def _stored(
    op: ChangeOp, record_id: str, seconds: int, client: str = "a", seq: int = 1, amount: int = 1, late: bool = False
) -> StoredChange:
    record = None if op is ChangeOp.DELETE else {**templates()["payments"][0], "id": record_id, "amount": amount}
    return StoredChange(
        Domain.PAYMENTS, record_id, op, Version(T + timedelta(seconds=seconds), client, seq), record, f"chg.{client}.{seq}", late
    )


def test_the_validator_replays_the_changes_after_the_snapshot_greatest_version_first() -> None:
    expected = Expected(digests={Domain.PAYMENTS: {"p1": "old", "p2": "old", "p3": "old"}}, records=None)
    unsettled, decided = apply_changes(
        expected,
        [
            _stored(ChangeOp.UPDATE, "p1", -5),  # before the snapshot: the snapshot has it already
            _stored(ChangeOp.DELETE, "p2", 3),
            _stored(ChangeOp.UPDATE, "p2", 2, seq=2),  # older than the delete: stays deleted
            _stored(ChangeOp.UPDATE, "p3", 4, amount=7, seq=3),
            _stored(ChangeOp.UPDATE, "p3", 5, amount=8, seq=4, late=True),  # after the cut: not compared
            _stored(ChangeOp.CREATE, "p4", 1, seq=5),
            _stored(ChangeOp.CREATE, "p5", 1, seq=6),  # quarantined: never in the tables
        ],
        school_id="s1",
        taken_at=T,
        default_ts=None,
        skip=frozenset({"chg.a.6"}),
    )
    digests = expected.digests[Domain.PAYMENTS]
    assert digests["p1"] == "old" and "p2" not in digests and "p3" not in digests and "p5" not in digests
    assert digests["p4"] != "old"
    assert unsettled[Domain.PAYMENTS] == {"p3"} and decided[Domain.PAYMENTS] == {"p2", "p3", "p4"}


@given(st.sampled_from(list(SnapshotFormat)))
def test_an_export_reads_back_as_the_records_it_was_made_of(fmt: SnapshotFormat) -> None:
    """``schoolmig.export.export_document`` writes what ``shared.source.snapshot`` reads: the same records,
    in order, in either format (the other domains reported left out of ``mockdata_export``)."""
    records = {domain: [dict(r) for r in templates()[key]] for domain, key in KEYS.items()}
    content, left_out = export_document(records, fmt, T)
    parsed = parse_snapshot(content, fmt)
    carried = set(LOCALSTORAGE_KEYS.values()) if fmt is SnapshotFormat.LOCALSTORAGE_DUMP else set(EXPORT_KEYS.values())
    for domain in Domain:
        if domain in carried:
            assert [e.record for e in parsed.entries[domain]] == records[domain] and domain not in left_out
        else:
            assert left_out[domain] == len(records[domain]) and domain not in parsed.entries
    assert parsed.unknown_keys == []
