"""The ledger's SQL says what its Python says, on a real PostgreSQL.

Every version comparison the services' SQL makes is rendered by ``shared.ledger.versions``
(``tests/unit/test_ledger_home.py`` fails on one written anywhere else); here generated
versions are compared by PostgreSQL through those renderings and by Python's ``Version``,
and the view ``migration.deleted_records`` is checked against ``is_deleted``. Client ids are
compared by bytes (``COLLATE "C"``), as Python orders them, whatever the database's default
collation.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from shared.catalog.domains import Domain
from shared.ledger.accounting import DomainCounts, counts_of
from shared.ledger.snapshots import later_sql, rank_sql
from shared.ledger.versions import SqlVersion, Version, is_deleted, snapshot_version

T = TypeVar("T")
T0 = datetime(2025, 3, 30, tzinfo=UTC)

clients = st.one_of(
    st.just(""),
    st.sampled_from(["a", "b", "ab", "B", "é", "z"]),
    st.text(st.characters(min_codepoint=1, blacklist_categories=("Cs",)), max_size=6),  # text PostgreSQL can hold
)
versions = st.builds(
    Version,
    source_ts=st.integers(0, 3).map(lambda s: T0 + timedelta(microseconds=s)),
    client_id=clients,
    seq=st.integers(0, 3),
)
SETTINGS = hsettings(
    max_examples=150, database=None, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
)

_A = SqlVersion("$1::timestamptz", "$2::text", "$3::bigint")
_B = SqlVersion("$4::timestamptz", "$5::text", "$6::bigint")
_COMPARED = f"SELECT {_A.older(_B)} AS older, {_A.not_newer(_B)} AS not_newer, {_A.newer(_B)} AS newer"
_SNAPSHOTS = f"SELECT {SqlVersion.snapshot('$1::timestamptz').older(SqlVersion('$2::timestamptz', '$3::text', '$4::bigint'))}"
_RANKED = f"SELECT {later_sql(rank_sql('', '$1::timestamptz', '$2::text'), rank_sql('', '$3::timestamptz', '$4::text'))}"


def _on(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(work, loop).result(timeout=60)


async def test_version_comparisons_in_sql_order_versions_as_python_does(pool: asyncpg.Pool) -> None:
    loop = asyncio.get_running_loop()

    @SETTINGS
    @given(a=versions, b=versions)
    def check(a: Version, b: Version) -> None:
        row = _on(loop, pool.fetchrow(_COMPARED, *a, *b))
        assert (row["older"], row["not_newer"], row["newer"]) == (a < b, a <= b, a > b)
        snap = snapshot_version(a.source_ts)
        assert _on(loop, pool.fetchval(_SNAPSHOTS, a.source_ts, *b)) == (snap < b)
        assert _on(loop, pool.fetchval(_RANKED, a.source_ts, a.client_id, b.source_ts, b.client_id)) == (
            (a.source_ts, a.client_id) > (b.source_ts, b.client_id)
        )

    await asyncio.to_thread(check)


async def test_every_column_holding_a_client_id_orders_it_by_bytes(pool: asyncpg.Pool) -> None:
    """One ordering of client ids everywhere: the columns the ledger keeps client (and device)
    ids in are declared ``COLLATE "C"`` (and every rendered comparison says ``COLLATE "C"``), so a
    database created with another default collation orders them as Python does. (This
    machine's PostgreSQL has no ICU and the OS no other locale: a linguistic collation cannot
    be exercised here.)"""
    declared = await pool.fetch(
        "SELECT table_name, column_name, collation_name FROM information_schema.columns"
        " WHERE table_schema = 'migration' AND (column_name IN ('live_client', 'deleted_client', 'client_id', 'device_id'))"
        " AND table_name IN ('changes', 'record_versions', 'parked_records', 'loaded_records', 'snapshots', 'device_states')"
    )
    assert len(declared) == 7 and {r["collation_name"] for r in declared} == {"C"}, [tuple(r) for r in declared]
    assert 'COLLATE "C"' in SqlVersion.of("v").older(SqlVersion.of("w"))


async def test_the_deleted_records_view_is_the_python_rule(pool: asyncpg.Pool) -> None:
    """A record is deleted while its greatest deletion is greater than its greatest content
    write (a change's, or any device's ledger line's snapshot version)."""
    loop = asyncio.get_running_loop()
    optional = st.none() | versions
    lines = st.lists(versions.map(lambda v: v.source_ts), max_size=3)  # one per device

    @SETTINGS
    @given(live=optional, deletion=optional, ledger=lines)
    def check(live: Version | None, deletion: Version | None, ledger: list[datetime]) -> None:
        if live is None and deletion is None and not ledger:
            return
        school = f"it-ledger-sql-{uuid.uuid4().hex[:8]}"
        content = max([v for v in (live, *map(snapshot_version, ledger)) if v is not None], default=None)
        assert _on(loop, deleted(school, live, deletion, ledger)) == is_deleted(content, deletion)

    async def deleted(school: str, live: Version | None, deletion: Version | None, ledger: list[datetime]) -> bool:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:  # never committed: nothing of this school is left behind
                if live is not None or deletion is not None:
                    await conn.execute(
                        "INSERT INTO migration.record_versions (school_id, domain, legacy_id, live_ts, live_client,"
                        " live_seq, deleted_ts, deleted_client, deleted_seq) VALUES ($1, 'grades', 'g1', $2, $3, $4, $5, $6, $7)",
                        school,
                        *(live or (None, None, None)),
                        *(deletion or (None, None, None)),
                    )
                for device, ledger_ts in enumerate(ledger):
                    await conn.execute(
                        "INSERT INTO migration.loaded_records (school_id, domain, legacy_id, snapshot_id, record_index,"
                        " source_ts, device_id, read_at) VALUES ($1, 'grades', 'g1', $3, 0, $2, $3, $2)",
                        school,
                        ledger_ts,
                        f"device-{device}",
                    )
                return bool(
                    await conn.fetchval("SELECT EXISTS (SELECT 1 FROM migration.deleted_records WHERE school_id = $1)", school)
                )
            finally:
                await tx.rollback()

    await asyncio.to_thread(check)


# ---------------------------------------------------------------------------- counts

SNAPSHOTS = ["s1", "s2"]
DOMAINS = [d.value for d in Domain][:3]
ledger_line = st.tuples(st.sampled_from(DOMAINS), st.integers(0, 5), st.sampled_from(SNAPSHOTS))  # (domain, id, snapshot)


@st.composite
def ledgers(draw: st.DrawFn) -> dict[str, Any]:
    """A school's ledger: lines, quarantine entries (some of parked records: orphans), parked
    records, two snapshots (audited or not, released or not) with source counts."""
    loaded = {(d, i): s for d, i, s in draw(st.lists(ledger_line, max_size=12))}
    parked = {(d, i): (s, draw(st.integers(0, 5))) for d, i, s in draw(st.lists(ledger_line, max_size=6))}
    quarantined = set(
        draw(st.lists(st.tuples(st.sampled_from(SNAPSHOTS), st.sampled_from(DOMAINS), st.integers(0, 5)), max_size=6))
    )
    return {
        "loaded": loaded,
        "parked": parked,
        "quarantined": quarantined,
        "snapshots": {
            s: (draw(st.booleans()), draw(st.booleans()), {d: draw(st.integers(0, 9)) for d in DOMAINS}) for s in SNAPSHOTS
        },
    }


async def test_ledger_counts_count_each_record_once_where_it_stands(pool: asyncpg.Pool) -> None:
    """``shared.ledger.accounting.counts_of`` against counting the same generated ledger in Python: a
    line is loaded for its snapshot, an entry quarantined, a parked record parked unless it is
    also in quarantine (an orphan, counted once) or has its snapshot's line (counted once, as
    loaded); snapshots neither audited nor released are not counted; the source is the audit's."""
    loop = asyncio.get_running_loop()

    @SETTINGS
    @given(ledger=ledgers())
    def check(ledger: dict[str, Any]) -> None:
        school = f"it-ledger-counts-{uuid.uuid4().hex[:8]}"
        expected: dict[tuple[str, str, str], tuple[bool, DomainCounts]] = {}
        for s, (audited, released, source) in ledger["snapshots"].items():
            if not (audited or released):
                continue
            for d in DOMAINS:
                parked = [
                    k
                    for k, (sn, idx) in ledger["parked"].items()
                    if sn == s
                    and k[0] == d
                    and (s, d, idx) not in ledger["quarantined"]
                    and not (ledger["loaded"].get(k) == s and k[1] == idx)  # its snapshot's line: loaded
                ]
                expected[(school, s, d)] = (
                    released,
                    DomainCounts(
                        source[d],
                        sum(1 for (dd, _), sn in ledger["loaded"].items() if (dd, sn) == (d, s)),
                        sum(1 for sn, dd, _ in ledger["quarantined"] if (sn, dd) == (s, d)),
                        len(parked),
                    ),
                )
        assert _on(loop, counted(school, ledger)) == expected

    async def counted(school: str, ledger: dict[str, Any]) -> dict[tuple[str, str, str], tuple[bool, DomainCounts]]:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:  # never committed
                for s, (audited, released, source) in ledger["snapshots"].items():
                    summary = {"source_counts": source}
                    await conn.execute(
                        "INSERT INTO migration.snapshots (school_id, snapshot_id, format, taken_at, size_bytes, sha256,"
                        " chunk_count, manifest, released_at, audit) VALUES ($1, $2, 'x', $3, 0, '', 0, '{}',"
                        " CASE WHEN $4 THEN now() END, CASE WHEN $4 THEN $5::jsonb END)",
                        school,
                        s,
                        T0,
                        released,
                        summary,
                    )
                    if audited:
                        await conn.execute(
                            "INSERT INTO migration.audits (school_id, snapshot_id, summary, findings) VALUES ($1, $2, $3::jsonb, '[]')",
                            school,
                            s,
                            summary,
                        )
                for (d, i), s in ledger["loaded"].items():
                    await conn.execute(
                        "INSERT INTO migration.loaded_records (school_id, domain, legacy_id, snapshot_id, record_index, source_ts,"
                        " read_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                        school,
                        d,
                        f"r{i}",
                        s,
                        i,
                        T0,
                    )
                for (d, i), (s, idx) in ledger["parked"].items():
                    await conn.execute(
                        "INSERT INTO migration.parked_records (school_id, domain, legacy_id, snapshot_id, record_index, source_ts,"
                        " record) VALUES ($1, $2, $3, $4, $5, $6, '{}')",
                        school,
                        d,
                        f"r{i}",  # (the same record as a line, sometimes: counted once, as loaded)
                        s,
                        idx,
                        T0,
                    )
                for s, d, idx in ledger["quarantined"]:
                    await conn.execute(
                        "INSERT INTO migration.quarantine (school_id, snapshot_id, domain, record_index, stage, reason, message,"
                        " payload) VALUES ($1, $2, $3, $4, 'loader', 'r', 'm', '{}')",
                        school,
                        s,
                        d,
                        idx,
                    )
                found = await counts_of(conn, [(school, s) for s in SNAPSHOTS])
                return {
                    (school, s, d): (released, counts[Domain(d)]) for (_, s), (released, counts) in found.items() for d in DOMAINS
                }
            finally:
                await tx.rollback()

    await asyncio.to_thread(check)


# ---------------------------------------------------------------------------- parked and held

Key = tuple[str, int]  # (domain, record id) of a parked write
Entry = tuple[str, str, int]  # (snapshot, domain, record index) of a quarantine entry
# A small space of keys, so that writes of the two tables meet often.
_domains = st.sampled_from(DOMAINS[:2])
_slot = st.tuples(st.sampled_from(SNAPSHOTS), _domains, st.integers(0, 1))
_key = st.tuples(_domains, st.integers(0, 1))
ledger_writes = st.lists(
    st.one_of(
        st.tuples(st.just("park"), _key, _slot),  # insert, or move to another snapshot and index
        st.tuples(st.just("unpark"), _key),
        st.tuples(st.just("quarantine"), st.lists(_slot, min_size=1, max_size=3)),  # one statement, several rows
        st.tuples(st.just("release"), _slot),
        st.tuples(st.just("move"), _slot, _slot),  # an entry's key changed (no writer does; the invariant holds anyway)
    ),
    min_size=2,
    max_size=14,
)
HELD_SETTINGS = hsettings(SETTINGS, phases=[Phase.explicit, Phase.generate], max_examples=300)


async def test_a_parked_write_is_held_exactly_when_the_quarantine_has_its_entry_whatever_the_order_of_writes(
    pool: asyncpg.Pool,
) -> None:
    """``parked_records.held`` (migration 019, what the counts read instead of probing the
    quarantine) equals "a quarantine entry has the parked write's school, snapshot, domain and
    record index" after any sequence of writes to either table, in either order: parking,
    re-parking under another snapshot, un-parking, entries added (several per statement, some
    already there), removed or re-keyed. Checked against a model of the same writes in Python."""
    loop = asyncio.get_running_loop()

    @HELD_SETTINGS
    @given(writes=ledger_writes)
    @example(writes=[("park", ("students", 0), ("s1", "students", 0)), ("quarantine", [("s1", "students", 0)])])
    @example(writes=[("quarantine", [("s1", "students", 0)]), ("park", ("students", 0), ("s1", "students", 0))])
    @example(
        writes=[
            ("park", ("students", 0), ("s1", "students", 0)),
            ("quarantine", [("s1", "students", 0)]),
            ("release", ("s1", "students", 0)),
        ]
    )
    @example(
        writes=[
            ("quarantine", [("s2", "students", 1)]),
            ("park", ("students", 0), ("s1", "students", 0)),
            ("park", ("students", 0), ("s2", "students", 1)),
        ]
    )
    @example(
        writes=[
            ("park", ("students", 0), ("s1", "students", 0)),
            ("quarantine", [("s1", "students", 0)]),
            ("move", ("s1", "students", 0), ("s2", "students", 0)),
        ]
    )
    def check(writes: list[tuple[Any, ...]]) -> None:
        parked: dict[Key, Entry] = {}
        quarantine: set[Entry] = set()
        for op, *args in writes:
            if op == "park":
                (d, i), (sn, _, idx) = args
                parked[(d, i)] = (sn, d, idx)
            elif op == "unpark":
                parked.pop(args[0], None)
            elif op == "quarantine":
                quarantine |= set(args[0])
            elif op == "release":
                quarantine.discard(args[0])
            elif op == "move" and args[0] in quarantine and args[1] not in quarantine:
                quarantine = (quarantine - {args[0]}) | {args[1]}
        expected = {key: slot in quarantine for key, slot in parked.items()}
        assert _on(loop, written(f"it-held-{uuid.uuid4().hex[:8]}", writes)) == expected

    async def written(school: str, writes: list[tuple[Any, ...]]) -> dict[Key, bool]:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:  # never committed
                for op, *args in writes:
                    if op == "park":
                        (d, i), (sn, _, idx) = args
                        await conn.execute(
                            "INSERT INTO migration.parked_records (school_id, domain, legacy_id, snapshot_id, record_index,"
                            " source_ts, record) VALUES ($1, $2, $3, $4, $5, $6, '{}') ON CONFLICT (school_id, domain, legacy_id)"
                            " DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id, record_index = EXCLUDED.record_index",
                            school, d, f"r{i}", sn, idx, T0,
                        )  # fmt: skip
                    elif op == "unpark":
                        d, i = args[0]
                        await conn.execute(
                            "DELETE FROM migration.parked_records WHERE (school_id, domain, legacy_id) = ($1, $2, $3)",
                            school, d, f"r{i}",
                        )  # fmt: skip
                    elif op == "quarantine":
                        await conn.execute(
                            "INSERT INTO migration.quarantine (school_id, snapshot_id, domain, record_index, stage, reason, message,"
                            " payload) SELECT $1, sn, d, i, 'loader', 'orphaned_reference', 'm', '{}'"
                            " FROM unnest($2::text[], $3::text[], $4::int[]) AS e (sn, d, i) ON CONFLICT DO NOTHING",
                            school, *map(list, zip(*args[0], strict=True)),
                        )  # fmt: skip
                    elif op == "release":
                        await conn.execute(
                            "DELETE FROM migration.quarantine WHERE (school_id, snapshot_id, domain, record_index)"
                            " = ($1, $2, $3, $4)",
                            school, *args[0],
                        )  # fmt: skip
                    else:
                        (sn, d, idx), (sn2, d2, idx2) = args
                        await conn.execute(
                            "UPDATE migration.quarantine SET snapshot_id = $5, domain = $6, record_index = $7"
                            " WHERE (school_id, snapshot_id, domain, record_index) = ($1, $2, $3, $4)"
                            " AND NOT EXISTS (SELECT 1 FROM migration.quarantine q"
                            "  WHERE (q.school_id, q.snapshot_id, q.domain, q.record_index) = ($1, $5, $6, $7))",
                            school, sn, d, idx, sn2, d2, idx2,
                        )  # fmt: skip
                rows = await conn.fetch(
                    "SELECT domain, legacy_id, held FROM migration.parked_records WHERE school_id = $1", school
                )
                return {(r["domain"], int(r["legacy_id"][1:])): r["held"] for r in rows}
            finally:
                await tx.rollback()

    await asyncio.to_thread(check)


line_writes = st.lists(
    st.one_of(
        # one statement writing lines (insert, or move a line to another snapshot): (domain, id, device) -> snapshot
        st.tuples(st.just("write"), st.lists(st.tuples(_domains, st.integers(0, 2), st.sampled_from(["", "d2"]), st.sampled_from(SNAPSHOTS)), min_size=1, max_size=4)),
        st.tuples(st.just("delete"), st.tuples(_domains, st.integers(0, 2), st.sampled_from(["", "d2"]))),
    ),
    min_size=1,
    max_size=10,
)  # fmt: skip


async def test_the_tallies_of_ledger_lines_are_their_count_whatever_the_writes(pool: asyncpg.Pool) -> None:
    """``migration.loaded_tallies`` (migration 020, what the counts read instead of counting
    lines) holds, for each school, snapshot and domain, the number of ledger lines there after
    any sequence of statements: several lines per statement, a line written again under
    another snapshot (the upsert the ledger makes), lines deleted. The oracle is the count itself."""
    loop = asyncio.get_running_loop()

    @HELD_SETTINGS
    @given(writes=line_writes)
    def check(writes: list[tuple[Any, ...]]) -> None:
        tallied, counted = _on(loop, lines(f"it-tally-{uuid.uuid4().hex[:8]}", writes))
        assert tallied == counted

    async def lines(school: str, writes: list[tuple[Any, ...]]) -> tuple[dict[Any, int], dict[Any, int]]:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:  # never committed
                for op, args in writes:
                    if op == "write":
                        latest = {(d, i, dev): sn for d, i, dev, sn in args}  # one statement touches a line once
                        await conn.execute(
                            "INSERT INTO migration.loaded_records AS l (school_id, domain, legacy_id, device_id, snapshot_id,"
                            " record_index, source_ts, read_at) SELECT $1, d, l, dev, sn, 0, $6, $6"
                            " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS k (d, l, dev, sn)"
                            " ON CONFLICT (school_id, domain, legacy_id, device_id) DO UPDATE SET snapshot_id = EXCLUDED.snapshot_id",
                            school,
                            [d for d, _, _ in latest], [f"r{i}" for _, i, _ in latest], [dev for _, _, dev in latest],
                            list(latest.values()), T0,
                        )  # fmt: skip
                    else:
                        d, i, dev = args
                        await conn.execute(
                            "DELETE FROM migration.loaded_records WHERE (school_id, domain, legacy_id, device_id) = ($1, $2, $3, $4)",
                            school, d, f"r{i}", dev,
                        )  # fmt: skip
                tallied = await conn.fetch(
                    "SELECT snapshot_id, domain, n FROM migration.loaded_tallies WHERE school_id = $1 AND n <> 0", school
                )
                counted = await conn.fetch(
                    "SELECT snapshot_id, domain, count(*) AS n FROM migration.loaded_records WHERE school_id = $1"
                    " GROUP BY snapshot_id, domain",
                    school,
                )
                return ({(r[0], r[1]): r[2] for r in tallied}, {(r[0], r[1]): r[2] for r in counted})
            finally:
                await tx.rollback()

    await asyncio.to_thread(check)


# ---------------------------------------------------------------------------- ledger lines per device


async def test_a_devices_newer_snapshot_takes_its_ledger_lines_over_whatever_their_versions(pool: asyncpg.Pool) -> None:
    """Of one device, the line names its newest snapshot holding the record (accounting), even
    when that snapshot's version of the record is older (unchanged since another device's
    reading); another device keeps a line of its own. In any order of the writes."""
    from shared.ledger.records import mark_loaded
    from shared.wire.messages import MappedRecord

    t1, t2 = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 3, 2, tzinfo=UTC)
    reads = {"s1": ("office", t1), "s2": ("office", t2), "t1": ("tablet", t1)}
    for order in (["s1", "s2", "t1"], ["t1", "s2", "s1"], ["s2", "s1", "t1"]):
        school = f"it-lines-{uuid.uuid4().hex[:8]}"
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:  # never committed
                for snapshot, (device, taken_at) in reads.items():
                    await conn.execute(
                        "INSERT INTO migration.snapshots (school_id, snapshot_id, format, taken_at, size_bytes, sha256,"
                        " chunk_count, manifest, device_id) VALUES ($1, $2, 'localstorage_dump', $3, 0, '', 0, '{}', $4)",
                        school,
                        snapshot,
                        taken_at,
                        device,
                    )
                version = {"s1": t1, "s2": t1 - timedelta(days=9), "t1": t1}  # s2's record: an older version
                for snapshot in order:
                    record = MappedRecord(
                        school_id=school,
                        snapshot_id=snapshot,
                        domain=Domain.STUDENTS,
                        index=0,
                        legacy_id="student-1",
                        source_ts=version[snapshot],
                        rows=[],
                    )
                    await mark_loaded(conn, [record])
                lines = await conn.fetch(
                    "SELECT device_id, snapshot_id, source_ts FROM migration.loaded_records WHERE school_id = $1 ORDER BY 1",
                    school,
                )
                assert [(r["device_id"], r["snapshot_id"], r["source_ts"]) for r in lines] == [
                    ("office", "s2", version["s2"]),
                    ("tablet", "t1", t1),
                ], order
            finally:
                await tx.rollback()
