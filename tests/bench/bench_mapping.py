"""Benchmark: the transform's pure mapping, records per second on one core.

Not a test (no pass/fail on a noisy machine): it prints and writes figures to
``.bench/mapping.json``. The speed is also given as a ratio to a baseline measured in
the same run on the same records: decoding and re-encoding each record as JSON, the
least any service does to move a record along.

    make bench            # or: python -m tests.bench.bench_mapping --schools 20
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from schoolmig.demo import school_dump
from shared.catalog.domains import LOCALSTORAGE_KEYS, Domain
from shared.catalog.ids import row_id_text
from shared.mapping import Mapped, map_record
from tests.bench import write_figures


def dataset(schools: int) -> list[tuple[str, Domain, str, dict[str, Any]]]:
    records = []
    for index in range(1, schools + 1):
        dump = school_dump(index, seed=42)
        for key, domain in LOCALSTORAGE_KEYS.items():
            for record in json.loads(dump[key]):
                records.append((f"school-{index}", domain, str(record["id"]), record))
    return records


def best_of(repeats: int, work: Any) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(".bench/mapping.json"))
    args = parser.parse_args()

    records = dataset(args.schools)
    texts = [json.dumps(r) for *_, r in records]

    def baseline() -> None:
        for text in texts:
            json.dumps(json.loads(text))

    def mapping() -> None:
        row_id_text.cache_clear()  # every run starts cold: no ids remembered from the last one
        for school, domain, legacy_id, record in records:
            map_record(domain, school, legacy_id, record, {}, "2024-06-01T00:00:00+00:00", zone=UTC)

    mapped = sum(isinstance(map_record(d, s, i, r, zone=UTC), Mapped) for s, d, i, r in records)
    base_s = best_of(args.repeats, baseline)
    map_s = best_of(args.repeats, mapping)
    per_domain = {}
    for domain in Domain:
        subset = [r for r in records if r[1] is domain]
        seconds = best_of(1, lambda subset=subset: [map_record(d, s, i, r, {}, None, zone=UTC) for s, d, i, r in subset])
        per_domain[domain.value] = {"records": len(subset), "records_per_s": round(len(subset) / seconds)}
    result = {
        "schools": args.schools,
        "records": len(records),
        "mapped": mapped,
        "mapping_records_per_s": round(len(records) / map_s),
        "baseline_json_round_trip_records_per_s": round(len(records) / base_s),
        "mapping_cost_vs_baseline": round(map_s / base_s, 2),
        "target_records_per_s": 50_000,
        "per_domain": per_domain,
    }
    write_figures(args.out, result)


if __name__ == "__main__":
    main()
