"""Where each device's history and each snapshot's derivation are kept (``shared.ledger.devices``).

Ingest derives a snapshot once, in one transaction under the school's derivation lock
(:func:`derive_snapshot`): it reads the device's state and the school's contents, derives,
and stores the snapshot's derivation, the device's new state and the school's contents
together. Asked again for the same snapshot (a redelivery, a re-drive, a crash before the
release was marked) it returns the stored derivation; a snapshot read before the device's
newest derived one is not derived (superseded: the device's later reading holds what it
still has). The coordinator marks a snapshot's deletions from its stored derivation; the
validator and the reports read every device's state.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from pydantic_core import from_json, to_json

from shared.ledger.devices import (
    DeviceState,
    Held,
    Ref,
    derive,
    pack_contents,
    pack_state,
    unpack_contents,
    unpack_state,
)
from shared.ledger.snapshots import adopted_sql, newest_first_sql

#: A snapshot's stored derivation, and a device's state: read wherever either is needed.
_DERIVATION = "SELECT versions, deleted FROM migration.snapshot_derivations WHERE school_id = $1 AND snapshot_id = $2"
_STATE = "SELECT snapshot_id, taken_at, state FROM migration.device_states WHERE school_id = $1 AND device_id = $2"
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('schoolmig.derive/' || $1, 0))"


@dataclass(frozen=True)
class Derived:
    """A snapshot's records' versions and its deletions (all at its read time)."""

    versions: dict[Ref, datetime]
    """Records whose version is not the snapshot's read time (unchanged, or first seen
    elsewhere); every other record it holds is a write at its read time."""
    deleted: list[Ref]
    superseded_by: str | None = None
    """Set (and nothing derived) when the device already has a snapshot read after this one."""

    def version_of(self, ref: Ref, taken_at: datetime) -> datetime:
        return self.versions.get(ref, taken_at)


def _pack(value: object) -> bytes:
    return zlib.compress(to_json(value), 1)


def _unpack(data: bytes) -> object:
    return from_json(zlib.decompress(data))


def _derived(row: asyncpg.Record) -> Derived:
    versions = {(d, i): datetime.fromisoformat(ts) for d, i, ts in _unpack(row["versions"])}  # type: ignore[attr-defined]
    return Derived(versions, [(d, i) for d, i in _unpack(row["deleted"])])  # type: ignore[attr-defined]


async def derive_snapshot(
    pool: asyncpg.Pool,
    *,
    school_id: str,
    device_id: str,
    snapshot_id: str,
    taken_at: datetime,
    held: dict[Ref, str],
    readable: frozenset[str] | None = None,
    as_released: bool = False,
) -> Derived:
    """The snapshot's derivation: stored now (one transaction, under the school's derivation
    lock), or as stored before. Either way, when the device already has a snapshot read after
    this one, it is superseded (``superseded_by``): a redelivery of an older snapshot after a
    crash never takes the newer one's records back. ``as_released``: a snapshot released before
    device histories existed, whose records were all loaded at its read time: derived as that
    (every version its read time), its contents added to the school's."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK, school_id)
        row = await conn.fetchrow(
            _DERIVATION,
            school_id,
            snapshot_id,
        )
        state_row = await conn.fetchrow(
            _STATE,
            school_id,
            device_id,
        )
        if state_row is not None and (state_row["taken_at"], state_row["snapshot_id"]) > (taken_at, snapshot_id):
            return Derived({}, [], superseded_by=state_row["snapshot_id"])
        if row is not None:
            return _derived(row)
        previous = (
            unpack_state(state_row["state"], state_row["snapshot_id"], state_row["taken_at"])
            if state_row is not None
            else DeviceState()
        )
        contents = unpack_contents(
            await conn.fetchval("SELECT contents FROM migration.school_contents WHERE school_id = $1", school_id)
        )
        done = derive(
            held,
            snapshot_id=snapshot_id,
            read_at=taken_at,
            previous=previous,
            contents={} if as_released else contents,
            readable=readable,
        )
        if as_released:
            for key, ts in contents.items():
                done.contents[key] = max(ts, done.contents.get(key, ts))
        sparse = [[d, i, ts.isoformat()] for (d, i), ts in done.versions.items() if ts != taken_at]
        await conn.execute(
            "INSERT INTO migration.snapshot_derivations (school_id, snapshot_id, device_id, versions, deleted)"
            " VALUES ($1, $2, $3, $4, $5)",
            school_id,
            snapshot_id,
            device_id,
            _pack(sparse),
            _pack([list(ref) for ref in done.deleted]),
        )
        await conn.execute(
            "INSERT INTO migration.device_states (school_id, device_id, snapshot_id, taken_at, state)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (school_id, device_id) DO UPDATE"
            " SET snapshot_id = EXCLUDED.snapshot_id, taken_at = EXCLUDED.taken_at, state = EXCLUDED.state, derived_at = now()",
            school_id,
            device_id,
            snapshot_id,
            taken_at,
            pack_state(done.state),
        )
        await conn.execute(
            "INSERT INTO migration.school_contents (school_id, contents) VALUES ($1, $2)"
            " ON CONFLICT (school_id) DO UPDATE SET contents = EXCLUDED.contents",
            school_id,
            pack_contents(done.contents),
        )
    return Derived({ref: ts for ref, ts in done.versions.items() if ts != taken_at}, sorted(done.deleted))


async def extend_derivation(
    pool: asyncpg.Pool, *, school_id: str, device_id: str, snapshot_id: str, taken_at: datetime, held: dict[Ref, str]
) -> Derived | None:
    """The snapshot read again with more records (an operator mapped a key of it): records
    its derivation did not hold join it, and its device's state while this is still the
    device's newest, by the rule for content new to the device (``shared.ledger.devices``).
    None: never derived (superseded)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_LOCK, school_id)
        row = await conn.fetchrow(
            _DERIVATION,
            school_id,
            snapshot_id,
        )
        if row is None:
            return None
        derived = _derived(row)
        state_row = await conn.fetchrow(
            _STATE,
            school_id,
            device_id,
        )
        if state_row is None or state_row["snapshot_id"] != snapshot_id:
            return derived  # the device has moved on: its later reading decides
        state = unpack_state(state_row["state"], snapshot_id, taken_at)
        # Records the state does not hold as this content: never held (new to the device: the
        # rule's first sight), or held otherwise (deleted by this reading, or carried over from
        # a key it could not read then): written now.
        changed = {ref: digest for ref, digest in held.items() if (h := state.records.get(ref)) is None or h.content != digest}
        if not changed:
            return derived
        contents = unpack_contents(
            await conn.fetchval("SELECT contents FROM migration.school_contents WHERE school_id = $1", school_id)
        )
        fresh = {ref: digest for ref, digest in changed.items() if ref not in state.records}
        done = derive(fresh, snapshot_id=snapshot_id, read_at=taken_at, previous=DeviceState(), contents=contents)
        again = {ref: Held(digest, taken_at) for ref, digest in changed.items() if ref in state.records}
        state.records |= done.state.records | again
        for ref, held_now in again.items():
            key = (*ref, held_now.content or "")
            done.contents[key] = max(done.contents.get(key, taken_at), taken_at)
        versions = {ref: ts for ref, ts in derived.versions.items() if ref not in again}
        versions |= {ref: ts for ref, ts in done.versions.items() if ts != taken_at}
        deleted = [ref for ref in derived.deleted if ref not in again]
        await conn.execute(
            "UPDATE migration.snapshot_derivations SET versions = $3, deleted = $4 WHERE school_id = $1 AND snapshot_id = $2",
            school_id,
            snapshot_id,
            _pack([[d, i, ts.isoformat()] for (d, i), ts in versions.items()]),
            _pack([list(ref) for ref in deleted]),
        )
        await conn.execute(
            "UPDATE migration.device_states SET state = $3, derived_at = now() WHERE school_id = $1 AND device_id = $2",
            school_id,
            device_id,
            pack_state(state),
        )
        await conn.execute(
            "UPDATE migration.school_contents SET contents = $2 WHERE school_id = $1", school_id, pack_contents(done.contents)
        )
    return Derived(versions, deleted)


async def derivation_of(db: asyncpg.Pool | asyncpg.Connection, school_id: str, snapshot_id: str) -> Derived | None:
    """A snapshot's stored derivation (None: never derived, e.g. superseded)."""
    row = await db.fetchrow(
        _DERIVATION,
        school_id,
        snapshot_id,
    )
    return _derived(row) if row is not None else None


async def device_snapshots(db: asyncpg.Pool | asyncpg.Connection, school_id: str) -> set[str]:
    """Each of the school's devices' newest derived snapshot."""
    rows = await db.fetch("SELECT snapshot_id FROM migration.device_states WHERE school_id = $1", school_id)
    return {r["snapshot_id"] for r in rows}


async def device_states(db: asyncpg.Pool | asyncpg.Connection, school_id: str) -> dict[str, DeviceState]:
    """Every device of the school, its history up to its newest derived snapshot."""
    rows = await db.fetch(
        "SELECT device_id, snapshot_id, taken_at, state FROM migration.device_states WHERE school_id = $1", school_id
    )
    return {r["device_id"]: unpack_state(r["state"], r["snapshot_id"], r["taken_at"]) for r in rows}


async def unmarked_deletions(conn: asyncpg.Connection, school_id: str) -> list[tuple[str, list[Ref]]]:
    """The school's derived snapshots whose deletions are not marked yet: (snapshot, deletions)."""
    rows = await conn.fetch(
        """
        SELECT d.snapshot_id, d.deleted FROM migration.snapshot_derivations d
          JOIN migration.snapshots s USING (school_id, snapshot_id)
         WHERE d.school_id = $1 AND s.deletions_marked_at IS NULL
        """,
        school_id,
    )
    return [(r["snapshot_id"], [(d, i) for d, i in _unpack(r["deleted"])]) for r in rows]  # type: ignore[attr-defined]


async def has_history(db: asyncpg.Pool | asyncpg.Connection, school_id: str, device_id: str) -> bool:
    """Whether the device has a derived history (then a snapshot of it that was never
    derived, superseded or unchanged, is never fanned out on its own)."""
    return bool(
        await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM migration.device_states WHERE school_id = $1 AND device_id = $2)",
            school_id,
            device_id,
        )
    )


async def underived_history(db: asyncpg.Pool | asyncpg.Connection, school_id: str, before: str) -> list[str]:
    """Devices with snapshots released before device histories existed (or whose history was
    lost) and no history: each one's newest such snapshot, oldest first, to derive before
    ``before`` (for every other device, nothing: one index look-up per device)."""
    rows = await db.fetch(
        f"""
        SELECT DISTINCT ON (s.device_id) s.snapshot_id, s.taken_at
          FROM migration.snapshots s
         WHERE s.school_id = $1 AND s.snapshot_id <> $2 AND {adopted_sql("s")}
           AND NOT EXISTS (SELECT 1 FROM migration.device_states h WHERE (h.school_id, h.device_id) = (s.school_id, s.device_id))
           AND NOT EXISTS (SELECT 1 FROM migration.superseded_snapshots x
                            WHERE (x.school_id, x.snapshot_id) = (s.school_id, s.snapshot_id))
         ORDER BY s.device_id, {newest_first_sql("s")}
        """,
        school_id,
        before,
    )
    return [r["snapshot_id"] for r in sorted(rows, key=lambda r: (r["taken_at"], r["snapshot_id"]))]


async def knows_device(db: asyncpg.Pool | asyncpg.Connection, school_id: str, device_id: str) -> bool:
    """Whether a snapshot (``device_id``) or a change (``client_id``) of the school came from this device."""
    return bool(
        await db.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM migration.device_states WHERE school_id = $1 AND device_id = $2)
                OR EXISTS (SELECT 1 FROM migration.changes WHERE school_id = $1 AND client_id = $2)
            """,
            school_id,
            device_id,
        )
    )
