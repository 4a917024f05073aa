import json

import pytest

from schoolmig.sdk import build_envelopes
from shared.catalog.domains import Domain
from shared.source.snapshot import WHOLE_VALUE_INDEX, parse_snapshot
from shared.source.source_files import UnreadableSnapshot, detect_format, load_document
from shared.wire.fanout import audit_summary, plan_fanout
from shared.wire.messages import QuarantinedRecord, RawRecord, SnapshotFormat


def dump(**keys: object) -> bytes:
    return json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in keys.items()}).encode()


def test_localstorage_dump_values_are_json_strings() -> None:
    content = dump(students=[{"id": "student-1"}, {"id": "student-2"}], paymentObligations=[{"id": "o-1"}])
    parsed = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP)
    assert [e.legacy_id for e in parsed.entries[Domain.STUDENTS]] == ["student-1", "student-2"]
    assert [e.legacy_id for e in parsed.entries[Domain.PAYMENT_OBLIGATIONS]] == ["o-1"]


def test_export_uses_obligations_not_payment_obligations() -> None:
    content = json.dumps(
        {"students": [{"id": "s-1"}], "obligations": [{"id": "o-1"}], "lastUpdated": "2024-05-01T00:00:00Z", "version": "1.0.0"}
    ).encode()
    document = load_document(content)
    assert detect_format(document) is SnapshotFormat.MOCKDATA_EXPORT
    parsed = parse_snapshot(content, SnapshotFormat.MOCKDATA_EXPORT)
    assert parsed.counts() == {Domain.STUDENTS: 1, Domain.PAYMENT_OBLIGATIONS: 1}
    assert parsed.unknown_keys == []


def test_unknown_keys_are_reported_not_fatal() -> None:
    content = dump(students=[{"id": "s-1"}], theme="dark", authToken="secret", mockDataMetadata={"version": "1"})
    parsed = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP)
    assert sorted(parsed.unknown_keys) == ["authToken", "theme"]
    assert parsed.counts() == {Domain.STUDENTS: 1}


def test_a_value_cut_short_is_one_quarantined_entry() -> None:
    content = json.dumps({"grades": '[{"id": "grade-1"}, {"id": "gr', "students": "[]"}).encode()
    parsed = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP)
    [entry] = parsed.entries[Domain.GRADES]
    assert entry.index == WHOLE_VALUE_INDEX
    assert entry.problem is not None and entry.problem.reason == "invalid_json"
    assert parsed.entries[Domain.STUDENTS] == []


def test_bad_entries_each_have_a_reason_and_duplicates_keep_the_first() -> None:
    content = dump(
        students=[{"id": "s-1", "v": 1}, "oops", None, {"name": "no id"}, {"id": "  "}, {"id": "s-1", "v": 2}, {"id": 7}]
    )
    entries = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP).entries[Domain.STUDENTS]
    problems = [(e.index, e.legacy_id, e.problem.reason if e.problem else None) for e in entries]
    assert problems == [
        (0, "s-1", None),
        (1, None, "not_an_object"),
        (2, None, "not_an_object"),
        (3, None, "missing_id"),
        (4, None, "missing_id"),
        (5, "s-1", "duplicate_id"),
        (6, "7", None),
    ]


def test_not_an_array_and_not_a_string() -> None:
    parsed = parse_snapshot(json.dumps({"students": '{"id": 1}', "teachers": 5}).encode(), SnapshotFormat.LOCALSTORAGE_DUMP)
    assert parsed.entries[Domain.STUDENTS][0].problem.reason == "not_an_array"  # type: ignore[union-attr]
    assert parsed.entries[Domain.TEACHERS][0].problem.reason == "not_a_string"  # type: ignore[union-attr]


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_file_that_is_no_json_object_is_unreadable(content: bytes) -> None:
    with pytest.raises(UnreadableSnapshot):
        load_document(content)


def test_fanout_sends_exactly_one_message_per_entry_and_the_audit_counts_them() -> None:
    content = dump(students=[{"id": "s-1"}, "bad", {"id": "s-1"}], grades="[cut", theme="x")
    manifest, _ = build_envelopes(content, "school-a")
    parsed = parse_snapshot(content, manifest.format)
    out = plan_fanout(parsed, manifest)
    assert len(out) == 4
    kinds = [(o.domain, type(o.message).__name__) for o in out]
    assert kinds.count((Domain.STUDENTS, RawRecord.__name__)) == 1
    assert sum(isinstance(o.message, QuarantinedRecord) for o in out) == 3
    assert out[0].key == b"school-a/students/s-1"
    assert all(o.message.source_ts == manifest.taken_at for o in out if isinstance(o.message, RawRecord))
    audit = audit_summary(parsed)
    assert audit.source_counts[Domain.STUDENTS] == 3
    assert audit.source_counts[Domain.GRADES] == 1
    assert audit.source_counts[Domain.TEACHERS] == 0
    assert audit.duplicate_ids == {Domain.STUDENTS: ["s-1"]}
    assert audit.corrupted == {Domain.STUDENTS: 1, Domain.GRADES: 1}
    assert audit.unknown_keys == ["theme"]


def test_an_email_is_kept_by_one_person_decided_over_the_whole_snapshot() -> None:
    content = dump(
        students=[{"id": "s-1", "email": "x@y"}, {"id": "s-2", "email": " x@y "}, {"id": "s-3", "email": "X@y"}],
        teachers=[{"id": "t-1", "email": "x@y"}],
    )
    parsed = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP)
    students = {e.legacy_id: e.problem for e in parsed.entries[Domain.STUDENTS]}
    assert parsed.entries[Domain.TEACHERS][0].problem is None  # teachers first: t-1 keeps it
    assert students["s-1"] is not None and students["s-1"].reason == "duplicate_email"
    assert students["s-2"] is not None and students["s-2"].message == "the same email as teachers/t-1, which keeps it"
    assert students["s-3"] is None  # another case is another address for the database (the audit still reports it)
    assert parsed.corrupted() == {}
