"""Reading a snapshot file into per-domain source entries. Pure: bytes in, data out.

Both files from the spec are understood: the raw localStorage dump (key -> JSON
*string*) and the MockDataService export (key -> array). What the spec calls "what real
data looks like" is accounted for here, never a reason to fail: a value that is not
valid JSON, an entry that is not an object, a missing id, a duplicate id. Each such
entry carries a ``problem`` and goes to quarantine instead of downstream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.catalog.domains import EXPORT_KEYS, LOCALSTORAGE_KEYS, METADATA_KEYS, Domain, keys_of
from shared.source import jsonsafe
from shared.source.source_files import UnreadableSnapshot, load_document
from shared.wire.messages import SnapshotFormat

__all__ = ["ParsedSnapshot", "Problem", "SourceEntry", "UnreadableSnapshot", "parse_snapshot"]

#: How deep a record may nest (a real one is 3 levels deep; the internal topics' parser
#: refuses documents past 200, so a deeper record would sink the whole batch it travels in).
MAX_RECORD_DEPTH = jsonsafe.DEFAULT_MAX_DEPTH

#: Index used for an entry that stands for a whole localStorage value (e.g. invalid JSON);
#: a domain's second key's whole value is one below it, and so on.
WHOLE_VALUE_INDEX = -1


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str


@dataclass(frozen=True)
class SourceEntry:
    index: int
    legacy_id: str | None
    record: Any
    problem: Problem | None = None


@dataclass
class ParsedSnapshot:
    entries: dict[Domain, list[SourceEntry]] = field(default_factory=dict)
    unknown_keys: list[str] = field(default_factory=list)
    """Keys read as nothing whose values do not look like records (UI state, flags, tokens)."""
    unmapped_keys: dict[str, int] = field(default_factory=dict)
    """Keys read as nothing whose values look like records: key -> how many objects."""
    aliased_keys: dict[str, Domain] = field(default_factory=dict)
    """Keys read as a domain through an alias (not the format's own key for it)."""

    def valid_records(self, domain: Domain) -> dict[str, dict[str, Any]]:
        """The records of a domain that will be migrated (the first of each id), by id."""
        return {e.legacy_id: e.record for e in self.entries.get(domain, []) if e.problem is None and e.legacy_id}

    def readable_records(self, domain: Domain) -> dict[str, dict[str, Any]]:
        """What the audit inspects: every readable record (the first of each id), including
        the ones held back only because another person keeps their email."""
        return {
            e.legacy_id: e.record
            for e in self.entries.get(domain, [])
            if e.legacy_id and (e.problem is None or e.problem.reason == "duplicate_email")
        }

    def classroom_ids_by_name(self) -> dict[str, str]:
        """Classroom id by its (space- and case-folded) name, for names that are unique."""
        seen: dict[str, list[str]] = {}
        for legacy_id, room in self.valid_records(Domain.CLASSROOMS).items():
            name = fold(room.get("name"))
            if name:
                seen.setdefault(name, []).append(legacy_id)
        return {name: ids[0] for name, ids in seen.items() if len(ids) == 1}

    def counts(self) -> dict[Domain, int]:
        return {domain: len(entries) for domain, entries in self.entries.items()}

    def duplicate_ids(self) -> dict[Domain, list[str]]:
        found = {
            domain: sorted({e.legacy_id for e in entries if e.problem and e.problem.reason == "duplicate_id" and e.legacy_id})
            for domain, entries in self.entries.items()
        }
        return {d: ids for d, ids in found.items() if ids}

    def corrupted(self) -> dict[Domain, int]:
        found = {
            domain: sum(1 for e in entries if e.problem and e.problem.reason not in ("duplicate_id", "duplicate_email"))
            for domain, entries in self.entries.items()
        }
        return {d: n for d, n in found.items() if n}


def fold(value: Any) -> str | None:
    """A name compared as a person would: spaces collapsed, case folded."""
    return " ".join(value.split()).casefold() if isinstance(value, str) and value.strip() else None


def parse_snapshot(
    content: bytes,
    fmt: SnapshotFormat,
    *,
    aliases: Mapping[str, Domain] | None = None,
    max_depth: int = MAX_RECORD_DEPTH,
) -> ParsedSnapshot:
    """``aliases``: more keys read as a domain (``SCHOOLMIG_KEY_ALIASES``; a snapshot is read
    again, by the validator or a re-drive, with the aliases its release used). ``max_depth``:
    how deep a record may nest (``SCHOOLMIG_MAX_NESTING_DEPTH``).

    A domain found under two keys (its own and an alias) has the records of both, in the
    file's order of keys; an id repeated across them is a duplicate like any other."""
    document = load_document(content)
    from_string = fmt is SnapshotFormat.LOCALSTORAGE_DUMP
    keys = keys_of(from_string, dict(aliases or {}))
    own = LOCALSTORAGE_KEYS if from_string else EXPORT_KEYS
    parsed = ParsedSnapshot(entries={})
    seen: dict[Domain, set[str]] = {}
    for key, value in document.items():
        name = jsonsafe.printable(key[:200])  # reported, never stored as sent
        domain = keys.get(key)
        if domain is None:
            if key not in METADATA_KEYS:
                if records := records_in(value, from_string=from_string):
                    parsed.unmapped_keys[name] = records
                else:
                    parsed.unknown_keys.append(name)
            continue
        if key not in own:
            parsed.aliased_keys[name] = domain
        entries = parsed.entries.setdefault(domain, [])
        entries += _entries(
            key,
            value,
            from_string=from_string,
            max_depth=max_depth,
            seen=seen.setdefault(domain, set()),
            offset=len(entries),
            whole_index=WHOLE_VALUE_INDEX - sum(1 for e in entries if e.index < 0),
        )
    _mark_duplicate_emails(parsed)
    return parsed


def records_in(value: Any, *, from_string: bool) -> int:
    """How many objects a value holds that look like records: an array of objects, or an
    object holding such arrays (a localStorage value first read as JSON). 0: not data (a
    flag, a theme, a token, a value that is not JSON)."""
    if from_string:
        if not isinstance(value, str):
            return 0
        try:
            value = jsonsafe.load(value)
        except jsonsafe.JsonRefused:
            return 0
    if isinstance(value, list):
        return sum(1 for item in value if isinstance(item, dict))
    if isinstance(value, dict):
        return sum(records_in(v, from_string=False) for v in value.values() if isinstance(v, list))
    return 0


#: People share one ``users`` table whose email is unique per school; who keeps an email
#: must not depend on which Kafka topic is read first, so it is decided here, over the
#: whole snapshot: teachers before students, then by position.
PEOPLE: tuple[Domain, ...] = (Domain.TEACHERS, Domain.STUDENTS)


def _mark_duplicate_emails(parsed: ParsedSnapshot) -> None:
    owner: dict[str, str] = {}
    for domain in PEOPLE:
        entries = parsed.entries.get(domain, [])
        for position, entry in enumerate(entries):
            email = entry.record.get("email") if entry.problem is None else None
            if not isinstance(email, str) or not email.strip():
                continue
            holder = owner.setdefault(email.strip(), f"{domain.value}/{entry.legacy_id}")
            if holder != f"{domain.value}/{entry.legacy_id}":
                entries[position] = SourceEntry(
                    entry.index,
                    entry.legacy_id,
                    entry.record,
                    Problem("duplicate_email", f"the same email as {holder}, which keeps it"),
                )


def _entries(
    key: str, value: Any, *, from_string: bool, max_depth: int, seen: set[str], offset: int, whole_index: int
) -> list[SourceEntry]:
    """The entries of one key's value: positions from ``offset`` on (after a domain's entries
    under another key), a whole value refused at ``whole_index`` (each key its own)."""
    if from_string:
        if not isinstance(value, str):
            return [
                _whole(
                    value,
                    "not_a_string",
                    f"localStorage value of '{key}' is a {type(value).__name__}, not a string",
                    max_depth,
                    whole_index,
                )
            ]
        try:
            value = jsonsafe.load(value)
        except jsonsafe.JsonRefused as exc:
            return [_whole(None, exc.reason, f"localStorage value of '{key}' is {exc.detail}", max_depth, whole_index)]
    if value is None:
        return []
    if not isinstance(value, list):
        return [
            _whole(
                value, "not_an_array", f"value of '{key}' is a {type(value).__name__}, expected an array", max_depth, whole_index
            )
        ]
    return [_entry(offset + index, item, seen, max_depth) for index, item in enumerate(value)]


def _whole(value: Any, reason: str, message: str, max_depth: int, index: int = WHOLE_VALUE_INDEX) -> SourceEntry:
    """A whole localStorage value in quarantine: kept as its payload when it can travel."""
    if (why := jsonsafe.unrepresentable(value, max_depth=max_depth)) is not None:
        value, message = None, f"{message}; not kept here ({why}), the verified backup holds it"
    return SourceEntry(index, None, value, Problem(reason, message))


def _printable_id(item: Any) -> str | None:
    """The entry's id if the id itself can be stored (it names the quarantined record)."""
    legacy_id = legacy_id_of(item)
    return legacy_id if legacy_id is not None and jsonsafe.unrepresentable(legacy_id) is None else None


def legacy_id_of(item: Any) -> str | None:
    raw = item.get("id") if isinstance(item, dict) else None
    if isinstance(raw, (bool, jsonsafe.LongInteger)) or not isinstance(raw, (str, int)):
        return None
    text = str(raw).strip()
    return text or None


def _entry(index: int, item: Any, seen: set[str], max_depth: int) -> SourceEntry:
    if (why := jsonsafe.unrepresentable(item, max_depth=max_depth, path=f"entry {index}")) is not None:
        # Quarantined here, whole: a value like this fails (or silently changes) downstream.
        # Its payload is left out (it cannot travel either); the verified backup holds it.
        message = f"{why}; the record is not carried (the verified backup holds it as sent)"
        return SourceEntry(index, _printable_id(item), None, Problem("unrepresentable_value", message))
    if not isinstance(item, dict):
        return SourceEntry(
            index, None, item, Problem("not_an_object", f"entry {index} is a {type(item).__name__}, expected an object")
        )
    legacy_id = legacy_id_of(item)
    if legacy_id is None:
        return SourceEntry(index, None, item, Problem("missing_id", f"entry {index} has no usable 'id'"))
    if legacy_id in seen:
        return SourceEntry(
            index,
            legacy_id,
            item,
            Problem("duplicate_id", f"id '{legacy_id}' appears earlier in this domain; the first one is migrated"),
        )
    seen.add(legacy_id)
    return SourceEntry(index, legacy_id, item)
