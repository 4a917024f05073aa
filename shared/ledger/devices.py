"""A school's several browsers: what each record's version is in a device's snapshot. Pure.

The app keeps its data in each browser's localStorage (the office PC, the director's
laptop, a teacher's tablet), every copy grown from the same demo seed; a school's data is
the union of its devices' copies. A snapshot names the device it was read from, and each
record's *version* in it follows from that device's own history (:func:`derive`):

- content that differs from what the device held in its previous snapshot, or that is new
  to the device, is a write at this snapshot's read time;
- content identical to what the device held keeps the version it had there;
- a record the device held and no longer holds is a deletion by that device at this read
  time; a record the device never held says nothing;
- a device's first sight of content the school already had from another device (the demo
  seed, a shared copy) takes the version that content last had in the school (never later
  than this read time), not a new write.

Then everything is the one comparison of ``shared.ledger.versions``: a snapshot's record is
the write ``(version time, "", 0)``, a deletion a tombstone at ``(read time, "", 0)``, the
greatest wins. So a revert on one device (A → B → A) is a new write and wins; a stale copy
on a tablet that never saw the office delete ``student-3`` does not revive it; a student
added on one browser survives the other browser's snapshot; of two devices holding
different content for one record the greater version wins, and :func:`conflicts` lists the
record for an operator to review. :func:`merge` is the school's merged truth the validator
compares the tables with.

What a device has held is kept as its :class:`DeviceState` (per record: the content's hash
and version, or the deletion's time), and what the school has held as its
:class:`SchoolContents` (per record and content: the latest version that content had);
ingest derives each snapshot once, under the school's derivation lock, in the order the
snapshots are released, and stores both (``shared.ledger.device_store``). Not guaranteed:
the derivation follows the release order. A device's snapshot read before that device's
newest released one is superseded (the browser's later reading holds what it still has);
but a device's *first* sight of content is judged against what the school had *released*
by then, so a stale copy released before the snapshots that show its content to be old
keeps its own read time (``schoolmig run`` publishes a school's files oldest first for
that reason, and every report lists the records two devices disagree on).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic_core import from_json, to_json

from shared.catalog.domains import Domain
from shared.source.snapshot import ParsedSnapshot

Ref = tuple[str, str]
"""A record of a school: (domain, legacy id)."""


def content_hash(record: object) -> str:
    """The fingerprint of a record's content: equal for equal JSON (key order aside)."""
    return hashlib.blake2b(to_json(_canonical(record)), digest_size=12).hexdigest()


def _canonical(value: object) -> object:
    if isinstance(value, dict):
        return {k: _canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return value


def held_records(parsed: ParsedSnapshot) -> dict[Ref, str]:
    """What a snapshot holds: each record with an id (the first of each id, whether it
    migrates or goes to quarantine: the browser holds it either way) and its content hash."""
    held: dict[Ref, str] = {}
    for domain, entries in parsed.entries.items():
        for entry in entries:
            if entry.legacy_id and (domain.value, entry.legacy_id) not in held:
                held[(domain.value, entry.legacy_id)] = content_hash(entry.record)
    return held


def readable_domains(parsed: ParsedSnapshot) -> frozenset[str]:
    """The domains whose values the snapshot holds whole: only what they no longer hold is a
    deletion. A domain whose key is not in the file (a MockDataService export has no grades,
    attendance or private lessons; another front end's key), or whose value could not be read
    (cut short, not an array), says nothing of its records."""
    return frozenset(domain.value for domain, entries in parsed.entries.items() if not any(entry.index < 0 for entry in entries))


@dataclass(frozen=True)
class Held:
    """What a device holds of one record: content (its hash) at a version, or its deletion."""

    content: str | None
    """The content's hash; None: the device deleted the record (held it once, not any more)."""
    ts: datetime
    """The content's version time, or when the device was seen to have deleted it."""


@dataclass
class DeviceState:
    """A device's history folded up to its newest derived snapshot."""

    snapshot_id: str | None = None
    taken_at: datetime | None = None
    records: dict[Ref, Held] = field(default_factory=dict)


SchoolContents = dict[tuple[str, str, str], datetime]
"""(domain, legacy id, content hash) -> the latest version that content had in the school."""


@dataclass(frozen=True)
class Derivation:
    """One snapshot's derivation: its records' versions, the deletions it makes, and the
    device's and the school's state after it."""

    versions: dict[Ref, datetime]
    """Every record the snapshot holds: its version time (its content's write)."""
    deleted: dict[Ref, datetime]
    """Records the device held in its previous snapshot and no longer holds: deleted now."""
    state: DeviceState
    contents: SchoolContents


def derive(
    held: Mapping[Ref, str],
    *,
    snapshot_id: str,
    read_at: datetime,
    previous: DeviceState,
    contents: Mapping[tuple[str, str, str], datetime],
    readable: Collection[str] | None = None,
) -> Derivation:
    """The versions of the records of a snapshot (``held``: each record's content hash) read
    at ``read_at`` from a device whose history so far is ``previous``, in a school that had
    ``contents`` (see the module's rule). ``readable``: the domains the snapshot holds whole
    (:func:`readable_domains`; None: all): of any other, what the device held before is kept
    as it was, not deleted."""
    versions: dict[Ref, datetime] = {}
    deleted: dict[Ref, datetime] = {}
    after: dict[Ref, Held] = {}
    known = dict(contents)
    for ref, digest in held.items():
        before = previous.records.get(ref)
        if before is not None and before.content == digest:
            ts = before.ts  # unchanged on this device
        elif before is None and (seen := contents.get((*ref, digest))) is not None:
            ts = min(seen, read_at)  # first sight here of content the school already had
        else:
            ts = read_at  # changed here, new here, or made again after this device deleted it
        versions[ref] = ts
        after[ref] = Held(digest, ts)
        key = (*ref, digest)
        if key not in known or known[key] < ts:
            known[key] = ts
    for ref, before in previous.records.items():
        if ref in held:
            continue
        if readable is not None and ref[0] not in readable:
            after[ref] = before  # a value it could not read, or a key not in this file: nothing known
        elif before.content is not None:
            deleted[ref] = read_at
            after[ref] = Held(None, read_at)
        else:
            after[ref] = before  # deleted earlier, still gone
    return Derivation(versions, deleted, DeviceState(snapshot_id, read_at, after), known)


# ------------------------------------------------------------------ the school's merged truth


@dataclass(frozen=True)
class Outcome:
    """Where one record stands across a school's devices (before live changes)."""

    device: str | None
    """The device whose content wins (None: no device holds content for it)."""
    content: Held | None
    """The winning content and its version."""
    deletion: datetime | None
    """The greatest deletion of the record by any device."""

    @property
    def deleted(self) -> bool:
        """Deleted while its greatest deletion is newer than its content (as
        ``shared.ledger.versions.is_deleted`` judges, every version a snapshot's)."""
        return self.deletion is not None and (self.content is None or self.deletion > self.content.ts)


def merge(states: Mapping[str, DeviceState]) -> dict[Ref, Outcome]:
    """Per record, the greatest content write over the devices' states and the greatest
    deletion: the school's truth from its snapshots. Of two contents at one version the
    greater device id's is taken (a tie the loader does not order: two devices read at
    the same microsecond with different content)."""
    best: dict[Ref, tuple[str, Held]] = {}
    gone: dict[Ref, datetime] = {}
    for device in sorted(states):
        for ref, held in states[device].records.items():
            if held.content is None:
                if ref not in gone or gone[ref] < held.ts:
                    gone[ref] = held.ts
            elif ref not in best or best[ref][1].ts <= held.ts:
                best[ref] = (device, held)
    out: dict[Ref, Outcome] = {}
    for ref in best.keys() | gone.keys():
        winner = best.get(ref)
        out[ref] = Outcome(winner[0] if winner else None, winner[1] if winner else None, gone.get(ref))
    return out


@dataclass(frozen=True)
class Conflict:
    """A record the devices disagree on: different content, or held by one and deleted by
    another. The greatest version won (:func:`merge`)."""

    domain: str
    legacy_id: str
    held: tuple[tuple[str, str, datetime], ...]
    """(device, "content" or "deleted", version time) of each device, greatest first."""
    winner: str
    """The device whose content stands, or ``deleted``."""

    def as_json(self) -> dict[str, object]:
        return {
            "domain": self.domain,
            "legacy_id": self.legacy_id,
            "winner": self.winner,
            "devices": [{"device": d, "holds": what, "version": ts.isoformat()} for d, what, ts in self.held],
        }


def conflicts(states: Mapping[str, DeviceState]) -> list[Conflict]:
    """Records whose devices disagree now, by domain and id."""
    holders: dict[Ref, list[tuple[str, Held]]] = {}
    for device, state in states.items():
        for ref, held in state.records.items():
            holders.setdefault(ref, []).append((device, held))
    outcome = merge(states) if holders else {}
    found = []
    for ref, holding in holders.items():
        if len({h.content for _, h in holding}) > 1:
            ordered = sorted(holding, key=lambda dh: (dh[1].ts, dh[0]), reverse=True)
            won = outcome[ref]
            winner = "deleted" if won.deleted or won.device is None else won.device
            found.append(
                Conflict(*ref, tuple((d, "deleted" if h.content is None else "content", h.ts) for d, h in ordered), winner)
            )
    return sorted(found, key=lambda c: (c.domain, c.legacy_id))


# ------------------------------------------------------------------ stored form

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _at(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def pack_state(state: DeviceState) -> bytes:
    """A device state as compact bytes (zlib'd JSON: per domain, id -> [hash or null, µs])."""
    by_domain: dict[str, dict[str, list[object]]] = {}
    for (domain, legacy_id), held in state.records.items():
        by_domain.setdefault(domain, {})[legacy_id] = [held.content, _micros(held.ts)]
    return zlib.compress(to_json(by_domain), 1)


def unpack_state(data: bytes | None, snapshot_id: str | None = None, taken_at: datetime | None = None) -> DeviceState:
    if not data:
        return DeviceState(snapshot_id, taken_at)
    records = {
        (domain, legacy_id): Held(content, _at(micros))
        for domain, ids in from_json(zlib.decompress(data)).items()
        for legacy_id, (content, micros) in ids.items()
    }
    return DeviceState(snapshot_id, taken_at, records)


def pack_contents(contents: Mapping[tuple[str, str, str], datetime]) -> bytes:
    rows = [[d, i, h, _micros(ts)] for (d, i, h), ts in contents.items()]
    return zlib.compress(to_json(rows), 1)


def unpack_contents(data: bytes | None) -> SchoolContents:
    if not data:
        return {}
    return {(d, i, h): _at(micros) for d, i, h, micros in from_json(zlib.decompress(data))}


def by_domain(refs: Iterable[Ref]) -> dict[Domain, set[str]]:
    """Records grouped per domain."""
    out: dict[Domain, set[str]] = {d: set() for d in Domain}
    for domain, legacy_id in refs:
        out[Domain(domain)].add(legacy_id)
    return out
