"""Hostile input, generated: what a careless or malicious client can put on the ingest topic.

Hypothesis strategies shared by the fast property tests (``tests/unit/test_hostile_input.py``,
the pure path) and the real-stack suite (``tests/integration/test_hostile_input.py``). Each
family the issue saw is a strategy, not a list of cases:

- values a parser or the database refuses late: integers past Python's digit limit, deep
  nesting, lone surrogates, NUL, ``NaN``/``Infinity``, numbers and dates out of any column's
  range, envelope fields of the wrong JSON type;
- sizes: huge strings and records inside a snapshot, whole messages past the contract's size;
- headers that are not UTF-8 or null, ``reply_to`` naming an internal topic;
- chunks with a wrong hash before the right one, indexes past the manifest.

Some hostility exists only as bytes (a 5,000-digit integer, 3,000 nested brackets, ``NaN``):
values carry a marker that :func:`render` replaces in the JSON text.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

from hypothesis import strategies as st

from schoolmig.demo import school_dump
from shared.catalog.domains import EXPORT_KEYS, LOCALSTORAGE_KEYS
from shared.wire.messages import SnapshotFormat

BIGINT = "\u2063BIGINT\u2063"
DEEP = "\u2063DEEP{}\u2063"
_MARKERS = {json.dumps(BIGINT): "1" * 5000}


def render(value: Any) -> str:
    """``value`` as JSON text (``NaN`` as Python writes it), markers replaced by what they stand for."""
    text = json.dumps(value, ensure_ascii=True, allow_nan=True)
    for marker, replacement in _MARKERS.items():
        text = text.replace(marker, replacement)
    return text


_MARKERS.update({json.dumps(DEEP.format(d)): "[" * d + "]" * d for d in (40, 300, 3000)})

NASTY_STRINGS = st.one_of(
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\ud800",
            "x\udfffy",
            "\ufeff",
            "",
            " ",
            "\u202e",
            "0000-00-00",
            "2024-02-30",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00+14:00",
            "+275760-09-13",
            "-1",
            "1e999",
            "NaN",
            "Infinity",
            "null",
            "[]",
            "{}",
            "true",
            "'; DROP TABLE users; --",
            "x" * 70_000,
        ]
    ),
    st.text(max_size=30),
)
NASTY_NUMBERS = st.one_of(
    st.sampled_from(
        [
            float("nan"),
            float("inf"),
            float("-inf"),
            1e308,
            -1e308,
            5e-324,
            2**31,
            -(2**31) - 1,
            2**63,
            -(2**63) - 1,
            10**40,
            0,
            -0.0,
        ]
    ),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
)
NASTY_SHAPES = st.one_of(
    st.sampled_from([BIGINT, DEEP.format(40), DEEP.format(300), DEEP.format(3000), [], {}, [[[]]], {"a": {"b": {"c": None}}}]),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)
NASTY_VALUES = st.one_of(NASTY_STRINGS, NASTY_NUMBERS, NASTY_SHAPES)


@cache
def templates() -> dict[str, list[dict[str, Any]]]:
    """A few valid records per localStorage key (from the demo generator), to spoil one field of."""
    dump = school_dump(0, 11, messy=False)
    return {key: json.loads(value)[:3] for key, value in dump.items() if key in LOCALSTORAGE_KEYS}


@st.composite
def spoiled_records(draw: st.DrawFn, key: str) -> dict[str, Any]:
    """A valid record of ``key``'s domain with one to three fields (maybe its id, maybe a new
    one) replaced by something hostile."""
    record = dict(draw(st.sampled_from(templates()[key])))
    fields = [*record, "id", "extra"]
    for _ in range(draw(st.integers(1, 3))):
        record[draw(st.sampled_from(fields))] = draw(NASTY_VALUES)
    return record


@st.composite
def hostile_snapshots(draw: st.DrawFn) -> tuple[bytes, SnapshotFormat, int]:
    """(file bytes, its format, how many spoiled records it holds): every domain's valid
    templates, plus spoiled records, in either of the spec's two file formats."""
    fmt = draw(st.sampled_from(list(SnapshotFormat)))
    keys = LOCALSTORAGE_KEYS if fmt is SnapshotFormat.LOCALSTORAGE_DUMP else EXPORT_KEYS
    spoiled = 0
    document: dict[str, Any] = {}
    for key, domain in keys.items():
        template_key = next(k for k, d in LOCALSTORAGE_KEYS.items() if d is domain)
        records: list[Any] = [dict(r, id=f"{r['id']}") for r in templates()[template_key]]
        bad = draw(st.lists(spoiled_records(template_key), max_size=2))
        spoiled += len(bad)
        records += bad
        document[key] = records
    for _ in range(draw(st.integers(0, 2))):  # keys nobody knows, some of them hostile themselves
        document[draw(st.one_of(NASTY_STRINGS, st.sampled_from(["theme", "\x00", "\ud800", "k" * 5000])))] = draw(NASTY_VALUES)
    if fmt is SnapshotFormat.LOCALSTORAGE_DUMP:
        text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(render(v))}" for k, v in document.items()) + "}"
    else:
        text = "{" + ",".join(f"{json.dumps(k)}:{render(v)}" for k, v in document.items()) + "}"
    return text.encode(), fmt, spoiled


# ------------------------------------------------------------------ envelopes and headers


def _manifest_fields(school_id: str) -> dict[str, Any]:
    return {
        "kind": "snapshot.manifest",
        "schema_version": 1,
        "school_id": school_id,
        "snapshot_id": "s1",
        "format": "localstorage_dump",
        "taken_at": "2024-05-01T10:00:00Z",
        "size_bytes": 10,
        "sha256": "0" * 64,
        "chunk_count": 1,
        "chunk_sha256": ["0" * 64],
    }


def _chunk_fields(school_id: str) -> dict[str, Any]:
    return {
        "kind": "snapshot.chunk",
        "schema_version": 1,
        "school_id": school_id,
        "snapshot_id": "s1",
        "index": 0,
        "data_b64": base64.b64encode(b"{}").decode(),
    }


@st.composite
def spoiled_envelopes(draw: st.DrawFn, school_id: str) -> bytes:
    """A manifest or chunk with one field wrong (type, range, encoding), missing, or extra."""
    fields = draw(st.sampled_from([_manifest_fields, _chunk_fields]))(school_id)
    name = draw(st.sampled_from([*fields, "unexpected"]))
    if draw(st.booleans()) and name in fields:
        del fields[name]
    else:
        fields[name] = draw(NASTY_VALUES)
    return render(fields).encode("utf-8", "surrogatepass")


RAW_GARBAGE = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            b"",
            b"null",
            b"[]",
            b"{}",
            b'"x"',
            b"\xff\xfe",
            b"{" * 5000,
            b"[" * 100_000,
            b"1" * 6000,
            b'{"kind":"barrier"}',
            b'{"kind":"barrier","barrier_id":"x","school_id":"s","topic":"t","partition":0,"origin":"o"}',
            b'{"schema_version":[1]}',
            b'{"schema_version":{"a":1}}',
            b'{"school_id":["a"]}',
            b'{"kind":NaN}',
        ]
    ),
)

HEADER_VALUES = st.one_of(st.binary(max_size=20), st.none(), st.just(b"\xff\xfe\xfd"), st.just(b"\xed\xa0\x80"))


@st.composite
def hostile_headers(draw: st.DrawFn, internal_topics: list[str]) -> list[tuple[str, bytes | None]]:
    """Headers a client can send: not UTF-8, null, ``reply_to`` naming an internal topic."""
    headers: list[tuple[str, bytes | None]] = draw(
        st.lists(st.tuples(st.sampled_from(["content-type", "correlation_id", "x", "schoolmig-auth"]), HEADER_VALUES), max_size=3)
    )
    if draw(st.booleans()):
        headers.append(("reply_to", draw(st.sampled_from(internal_topics)).encode()))
    return headers
