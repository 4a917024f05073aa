"""Every key of a file is accounted for: read as a domain (its own name, the other format's,
or an alias), noted as UI state, or, holding records nobody maps, a critical audit finding
that stops the school at the gate."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.audit import audit_snapshot
from shared.catalog.domains import DEFAULT_KEY_ALIASES, EXPORT_KEYS, LOCALSTORAGE_KEYS, METADATA_KEYS, Domain
from shared.source.snapshot import parse_snapshot, records_in
from shared.wire.fanout import audit_summary
from shared.wire.messages import Severity, SnapshotFormat

KNOWN = set(LOCALSTORAGE_KEYS) | set(EXPORT_KEYS) | set(DEFAULT_KEY_ALIASES) | METADATA_KEYS
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
records = st.lists(st.fixed_dictionaries({"id": st.text("abc123", min_size=1, max_size=4)}), min_size=1, max_size=4)
data_like = st.one_of(records, st.dictionaries(st.text("xyz", min_size=1, max_size=3), records, min_size=1, max_size=2))
ui_like = st.one_of(
    scalars, st.dictionaries(st.text("xyz", min_size=1, max_size=3), scalars, max_size=3), st.lists(scalars, max_size=3)
)
extra_keys = st.text("abcdefghijklmnopqrstuvwxyzABC-_", min_size=1, max_size=12).filter(lambda k: k not in KNOWN)


def _dump(values: dict[str, Any]) -> bytes:
    return json.dumps({k: json.dumps(v) for k, v in values.items()}).encode()


def _objects(value: Any) -> int:
    if isinstance(value, list):
        return sum(isinstance(v, dict) for v in value)
    return sum(_objects(v) for v in value.values() if isinstance(v, list)) if isinstance(value, dict) else 0


@given(st.dictionaries(extra_keys, st.one_of(data_like, ui_like), max_size=5), st.booleans())
def test_a_key_nobody_reads_is_a_critical_finding_when_it_holds_records_and_a_note_otherwise(
    extra: dict[str, Any], as_dump: bool
) -> None:
    values = {"students": [{"id": "s1"}], **extra}
    fmt = SnapshotFormat.LOCALSTORAGE_DUMP if as_dump else SnapshotFormat.MOCKDATA_EXPORT
    content = _dump(values) if as_dump else json.dumps(values).encode()
    parsed = parse_snapshot(content, fmt)
    holding = {k: _objects(v) for k, v in extra.items() if _objects(v)}
    assert parsed.unmapped_keys == holding
    assert sorted(parsed.unknown_keys) == sorted(k for k in extra if k not in holding)
    critical = [f for f in audit_snapshot(parsed) if f.severity is Severity.CRITICAL]
    assert sorted(f.field or "" for f in critical if f.type == "unmapped_data_key") == sorted(holding)
    assert audit_summary(parsed).unmapped_keys == dict(sorted(holding.items()))


@given(records, records)
def test_a_domain_under_its_own_key_and_an_alias_keeps_every_record_of_both(own: list[Any], aliased: list[Any]) -> None:
    content = _dump({"attendance-records": own, "attendanceRecords": aliased})
    parsed = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP, aliases=DEFAULT_KEY_ALIASES)
    entries = parsed.entries[Domain.ATTENDANCE]
    assert len(entries) == len(own) + len(aliased)  # every record counted, none left behind
    assert len({e.index for e in entries}) == len(entries)  # each its own place (quarantine's key)
    migrated = [e.legacy_id for e in entries if e.problem is None]
    assert migrated == list(dict.fromkeys(r["id"] for r in own + aliased))  # a repeated id: the first, once
    assert parsed.aliased_keys == {"attendanceRecords": Domain.ATTENDANCE}
    assert parsed.unmapped_keys == {}


def test_an_operator_alias_reads_the_key_and_without_it_the_key_blocks() -> None:
    content = _dump({"students": [{"id": "s1"}], "attendanceRecs": [{"id": "a1"}, {"id": "a2"}], "theme": "dark"})
    blocked = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP, aliases=DEFAULT_KEY_ALIASES)
    assert blocked.unmapped_keys == {"attendanceRecs": 2} and blocked.unknown_keys == ["theme"]
    assert Domain.ATTENDANCE not in blocked.entries
    mapped = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP, aliases={"attendanceRecs": Domain.ATTENDANCE})
    assert [e.legacy_id for e in mapped.entries[Domain.ATTENDANCE]] == ["a1", "a2"]
    assert mapped.unmapped_keys == {} and not [f for f in audit_snapshot(mapped) if f.severity is Severity.CRITICAL]


def test_each_format_reads_the_other_formats_keys() -> None:
    export = json.dumps({"students": [{"id": "s1"}], "grades": [{"id": "g1"}], "version": "1"}).encode()
    assert parse_snapshot(export, SnapshotFormat.MOCKDATA_EXPORT).counts() == {Domain.STUDENTS: 1, Domain.GRADES: 1}
    dumped = _dump({"obligations": [{"id": "o1"}]})
    parsed = parse_snapshot(dumped, SnapshotFormat.LOCALSTORAGE_DUMP)
    assert parsed.counts() == {Domain.PAYMENT_OBLIGATIONS: 1} and parsed.aliased_keys == {
        "obligations": Domain.PAYMENT_OBLIGATIONS
    }


def test_two_whole_values_refused_in_one_domain_keep_two_places() -> None:
    content = json.dumps({"attendance-records": "[{", "attendanceRecords": "not json"}).encode()
    entries = parse_snapshot(content, SnapshotFormat.LOCALSTORAGE_DUMP, aliases=DEFAULT_KEY_ALIASES).entries[Domain.ATTENDANCE]
    assert sorted(e.index for e in entries) == [-2, -1] and all(e.problem for e in entries)


def test_what_looks_like_records() -> None:
    assert records_in('[{"id": 1}, 2]', from_string=True) == 1
    assert records_in('{"a": [{"id": 1}], "b": 3}', from_string=True) == 1
    assert records_in("dark", from_string=True) == records_in('{"a": 1}', from_string=True) == 0
    assert records_in([], from_string=False) == records_in("[{", from_string=True) == 0
