"""Benchmark: the wire's codec and compression, chosen by measurement.

The same demo schools' records, as they travel raw (ingest -> transform) and mapped
(transform -> loader), encoded and decoded:
- **per record** with the pydantic models (the old design: one message per record);
- **batches, pydantic-core** (``shared.wire.batching``: entries encoded once, decoded and
  validated in one pass) - the codec in use;
- **batches, msgspec** and **batches, stdlib json** (decode only parses: no validation).
Then each batch body through every producer compression aiokafka offers: bytes on the wire
and the time to compress and decompress.

Prints and writes ``.bench/codec.json``; ratios are against the per-record pydantic path,
measured in the same run.

    make bench            # or: python -m tests.bench.bench_codec --schools 10
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import msgspec
from aiokafka import codec

from schoolmig.demo import school_dump
from schoolmig.sdk import build_envelopes
from services.transform.records import transform, transform_batch
from shared.source.snapshot import parse_snapshot
from shared.wire.batching import decode, encode, header, pack
from shared.wire.fanout import fanout_batches, plan_fanout
from shared.wire.messages import MappedRecord, RawBatch, RawRecord
from tests.bench import write_figures
from tests.bench.bench_mapping import best_of


def dataset(schools: int) -> tuple[list[RawRecord], list[MappedRecord], list[bytes], list[bytes]]:
    raw_records: list[RawRecord] = []
    mapped: list[MappedRecord] = []
    raw_bodies: list[bytes] = []
    rows_bodies: list[bytes] = []
    for index in range(1, schools + 1):
        content = json.dumps(school_dump(index, seed=42)).encode()
        manifest, _ = build_envelopes(content, f"school-{index}")
        outgoing = plan_fanout(parse_snapshot(content, manifest.format), manifest)
        for item in outgoing:
            if isinstance(item.message, RawRecord):
                raw_records.append(item.message)
                if isinstance(out := transform(item.message), MappedRecord):
                    mapped.append(out)
        for batch in fanout_batches(outgoing, manifest, max_records=500, max_bytes=512 * 1024, timezone="UTC"):
            if batch.kind != "raw":
                continue
            raw_bodies.append(batch.body)
            raw = decode(batch.body)
            assert isinstance(raw, RawBatch)
            head = header("rows.batch", raw.school_id, raw.snapshot_id, raw.domain, raw.source_ts)
            rows_bodies += [body for body, _ in pack(head, transform_batch(raw).mapped, max_records=500, max_bytes=512 * 1024)]
    return raw_records, mapped, raw_bodies, rows_bodies


COMPRESSIONS: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
    "none": (lambda b: b, lambda b: b),
    "gzip": (codec.gzip_encode, codec.gzip_decode),
    "snappy": (codec.snappy_encode, codec.snappy_decode),
    "lz4": (codec.lz4_encode, codec.lz4_decode),
    "zstd": (codec.zstd_encode, codec.zstd_decode),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--schools", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(".bench/codec.json"))
    args = parser.parse_args()

    raw_records, mapped, raw_bodies, rows_bodies = dataset(args.schools)
    records = len(raw_records) + len(mapped)
    per_record_raw = [r.model_dump_json().encode() for r in raw_records]
    per_record_rows = [m.model_dump_json().encode() for m in mapped]
    json_decoder = msgspec.json.Decoder()

    def pydantic_per_record() -> None:
        for r in raw_records:
            r.model_dump_json()
        for m in mapped:
            m.model_dump_json()
        for body in per_record_raw:
            RawRecord.model_validate_json(body)
        for body in per_record_rows:
            MappedRecord.model_validate_json(body)

    entries = [json_decoder.decode(body)["entries"] for body in raw_bodies + rows_bodies]

    def encode_pydantic_core() -> None:
        for batch in entries:
            for entry in batch:
                encode(entry)

    def encode_msgspec() -> None:
        for batch in entries:
            for entry in batch:
                msgspec.json.encode(entry)

    def encode_stdlib() -> None:
        for batch in entries:
            for entry in batch:
                json.dumps(entry, ensure_ascii=False).encode()

    def decode_pydantic_core() -> None:
        for body in raw_bodies + rows_bodies:
            decode(body)

    def decode_msgspec() -> None:
        for body in raw_bodies + rows_bodies:
            json_decoder.decode(body)

    def decode_stdlib() -> None:
        for body in raw_bodies + rows_bodies:
            json.loads(body)

    baseline = best_of(args.repeats, pydantic_per_record)
    timings = {
        "encode_pydantic_core": best_of(args.repeats, encode_pydantic_core),
        "encode_msgspec": best_of(args.repeats, encode_msgspec),
        "encode_stdlib_json": best_of(args.repeats, encode_stdlib),
        "decode_validate_pydantic_core": best_of(args.repeats, decode_pydantic_core),
        "decode_only_msgspec": best_of(args.repeats, decode_msgspec),
        "decode_only_stdlib_json": best_of(args.repeats, decode_stdlib),
    }
    chosen = timings["encode_pydantic_core"] + timings["decode_validate_pydantic_core"]
    bodies = raw_bodies + rows_bodies
    plain = sum(map(len, bodies))
    compression = {}
    for name, (compress, decompress) in COMPRESSIONS.items():
        packed = [compress(b) for b in bodies]
        compression[name] = {
            "bytes_ratio": round(sum(map(len, packed)) / plain, 3),
            "compress_mb_per_s": round(plain / 1e6 / best_of(args.repeats, lambda c=compress: [c(b) for b in bodies]), 1),
            "decompress_mb_per_s": round(
                plain / 1e6 / best_of(args.repeats, lambda d=decompress, p=packed: [d(b) for b in p]), 1
            ),
        }
    result = {
        "schools": args.schools,
        "records_on_wire": records,
        "batch_messages": len(bodies),
        "mean_batch_bytes": round(plain / len(bodies)),
        "per_record_pydantic_us_per_record": round(baseline / records * 1e6, 2),
        "batched_pydantic_core_us_per_record": round(chosen / records * 1e6, 2),
        "batched_vs_per_record_speedup": round(baseline / chosen, 2),
        "us_per_record": {k: round(v / records * 1e6, 3) for k, v in timings.items()},
        "codec": "pydantic-core (exact big integers; validates while decoding)",
        "compression": compression,
    }
    write_figures(args.out, result)


if __name__ == "__main__":
    main()
