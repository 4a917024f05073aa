"""``schoolmig export``: a school's data out of PostgreSQL as a file its app can load, and
the proof that it is whole.

The file is rebuilt from the tables (``schoolmig.export``). With ``verify``, it is published
as a snapshot of a scratch school (``<school>.verify-<random>``, listed in
``migration.scratch_schools`` and so left out of status and metrics) through the real pipeline;
once that school validates, its records are read back and must equal the file's, record by
record. The export, and its verification, are recorded in ``migration.exports``: a rollback
after a cutover needs a verified export made after the cutover (the coordinator checks).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from schoolmig.export import Records, export_document, live_records
from schoolmig.runner import wait_for_report
from schoolmig.sdk import publish_snapshot
from shared.catalog.domains import Domain
from shared.ledger.schools import mark_scratch
from shared.platform.db import pg_json
from shared.platform.settings import Settings
from shared.wire.messages import SnapshotFormat


@dataclass
class ExportResult:
    export_id: str
    path: Path
    sha256: str
    size_bytes: int
    records: dict[str, int]
    left_out: dict[str, int]
    verified_with: str | None = None
    differences: list[str] = field(default_factory=list)
    """Why verification failed (domain and record ids, never values); empty when it passed."""

    @property
    def verified(self) -> bool:
        return self.verified_with is not None and not self.differences


def scratch_school(school_id: str) -> str:
    return f"{school_id[:47]}.verify-{secrets.token_hex(4)}"


def differences(want: Records, got: Records, domains: list[Domain]) -> list[str]:
    """Where the scratch school's records differ from the file's (ids only)."""
    found = []
    for domain in domains:
        mine = {str(r.get("id")): r for r in want.get(domain, [])}
        theirs = {str(r.get("id")): r for r in got.get(domain, [])}
        for legacy_id in sorted(mine.keys() ^ theirs.keys()):
            found.append(f"{domain.value}/{legacy_id}: {'missing after re-ingest' if legacy_id in mine else 'not in the file'}")
        for legacy_id in sorted(k for k in mine.keys() & theirs.keys() if mine[k] != theirs[k]):
            found.append(f"{domain.value}/{legacy_id}: differs after re-ingest")
    return found


async def export_school(
    pool: asyncpg.Pool,
    settings: Settings,
    school_id: str,
    fmt: SnapshotFormat,
    out: Path,
    *,
    actor: str,
    verify: bool,
    timeout_s: float = 300,
) -> ExportResult:
    records = await live_records(pool, school_id)
    if not any(records.values()):
        raise LookupError(f"{school_id} has no records in the tables")
    content, left_out = export_document(records, fmt, datetime.now(UTC))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the school's personal data: its owner only
    with os.fdopen(fd, "wb") as f:
        f.write(content)
    result = ExportResult(
        export_id=uuid.uuid4().hex,
        path=out,
        sha256=hashlib.sha256(content).hexdigest(),
        size_bytes=len(content),
        records={d.value: len(rs) for d, rs in records.items() if d not in left_out},
        left_out={d.value: n for d, n in left_out.items()},
    )
    await pool.execute(
        "INSERT INTO migration.exports (export_id, school_id, format, sha256, size_bytes, records, left_out, actor)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        result.export_id,
        school_id,
        fmt.value,
        result.sha256,
        result.size_bytes,
        pg_json(result.records),
        pg_json(result.left_out),
        actor,
    )
    if not verify:
        return result
    assert settings.kafka_bootstrap_servers  # schoolmig.endpoints.located
    scratch = scratch_school(school_id)
    await mark_scratch(pool, scratch, result.export_id, school_id)  # not a school of its own: hidden from status
    # Read in the school's own zone, as its records were (the scratch school has no other).
    zone = await pool.fetchval("SELECT zone FROM migration.school_zones WHERE school_id = $1", school_id)
    manifest = await publish_snapshot(
        settings.kafka_bootstrap_servers, settings.resolved_ingest_topic, scratch, content, fmt=fmt, timezone=zone
    )
    report = await wait_for_report(pool, scratch, manifest.snapshot_id, time.monotonic() + timeout_s)
    result.verified_with = f"{scratch}/{manifest.snapshot_id}"
    if report is None or report.get("phase") != "validated":
        result.differences = [f"the scratch school {scratch} did not validate ({report and report.get('phase')})"]
    else:
        carried = [d for d in Domain if d.value in result.records]
        result.differences = differences(records, await live_records(pool, scratch), carried)
    if result.verified:
        await pool.execute(
            "UPDATE migration.exports SET verified_at = now(), verified_with = $2 WHERE export_id = $1",
            result.export_id,
            result.verified_with,
        )
    return result
