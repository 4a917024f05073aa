"""The second copy of every snapshot: a timestamped file beside its SHA-256.

``<backup_dir>/<school_id>/<snapshot_id>-<UTC timestamp>.json`` holds the bytes exactly
as received; ``….json.sha256`` holds ``<hex>  <file name>`` (``sha256sum -c`` reads it).
Written to a temporary name and renamed, so a crash never leaves a half file.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from shared.wire.chunks import sha256_hex


def write_backup_file(backup_dir: Path, school_id: str, snapshot_id: str, content: bytes, sha256: str) -> Path:
    folder = backup_dir / school_id
    folder.mkdir(parents=True, exist_ok=True)
    existing = sorted(folder.glob(f"{snapshot_id}-*.json"))
    if existing and verify_backup_file(existing[-1], sha256):
        return existing[-1]  # the same snapshot again: one copy is enough
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{snapshot_id}-{stamp}.json"
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    path.with_suffix(".json.sha256").write_text(f"{sha256}  {path.name}\n")
    return path


def verify_backup_file(path: Path, sha256: str) -> bool:
    try:
        return sha256_hex(path.read_bytes()) == sha256
    except OSError:
        return False
