"""The dlt side of ``bench_e2e``: what a data engineer would write with dlt for the same files.

Runs in its own virtual environment (dlt's dependencies are not the project's), so it
imports nothing from the project. Every localStorage value is parsed (a value that is not
JSON, or an entry without an id, is skipped: dlt has no quarantine), each domain becomes
a resource with ``school_id`` added, merged on (school_id, id) into PostgreSQL; nested
lists become dlt's child tables. Prints one JSON line: seconds and rows loaded.

    python tests/bench/dlt_load.py DIR POSTGRES_DSN
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dlt
import psycopg2

KEYS = {
    "students": "students",
    "teachers": "teachers",
    "classes": "classes",
    "classrooms": "classrooms",
    "paymentObligations": "payment_obligations",
    "payments": "payments",
    "attendance-records": "attendance",
    "assessments": "assessments",
    "grades": "grades",
    "privateLessons": "private_lessons",
}


def records(files: list[Path], key: str) -> Iterator[dict[str, Any]]:
    for path in files:
        school_id = path.stem
        try:
            values = json.loads(json.loads(path.read_text(encoding="utf-8")).get(key) or "[]")
        except ValueError:
            continue
        for record in values if isinstance(values, list) else []:
            if isinstance(record, dict) and record.get("id") is not None:
                yield {**record, "id": str(record["id"]), "school_id": school_id}


def with_password(dsn: str) -> str:
    """dlt insists on a password; the embedded PostgreSQL trusts loopback and ignores it."""
    parts = urlsplit(dsn)
    if parts.password or not parts.username:
        return dsn
    return urlunsplit(parts._replace(netloc=f"{parts.username}:unused@{parts.hostname}:{parts.port}"))


def main() -> None:
    folder, dsn = Path(sys.argv[1]), with_password(sys.argv[2])
    files = sorted(folder.glob("*.json"))
    started = time.perf_counter()
    pipeline = dlt.pipeline(
        pipeline_name="schoolmig_bench",
        destination=dlt.destinations.postgres(dsn),
        dataset_name="dlt_bench",
        pipelines_dir=str(folder / ".dlt"),
    )
    resources = [
        dlt.resource(records(files, key), name=name, write_disposition="merge", primary_key=("school_id", "id"))
        for key, name in KEYS.items()
    ]
    pipeline.run(resources)
    seconds = time.perf_counter() - started
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'dlt_bench' AND table_name NOT LIKE '\\_dlt%'"
        )
        rows = 0
        for (table,) in cur.fetchall():
            cur.execute(f'SELECT count(*) FROM dlt_bench."{table}"')
            rows += cur.fetchone()[0]
    print(json.dumps({"seconds": seconds, "rows": rows}))


if __name__ == "__main__":
    main()
