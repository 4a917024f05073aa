"""Cutting a snapshot file into chunks and putting it back together, verified.

Pure functions: the SDK uses ``split`` to publish, ingest uses ``assemble`` to release.
"""

from __future__ import annotations

import base64
import hashlib

from shared.wire.messages import MAX_CHUNK_BYTES


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split(content: bytes, chunk_bytes: int = MAX_CHUNK_BYTES) -> list[bytes]:
    """The file's bytes in order, at most ``chunk_bytes`` each (one empty chunk for an empty file)."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    return [content[i : i + chunk_bytes] for i in range(0, len(content), chunk_bytes)] or [b""]


def encode(chunk: bytes) -> str:
    return base64.b64encode(chunk).decode("ascii")


def decode(data_b64: str) -> bytes:
    return base64.b64decode(data_b64, validate=True)


class AssemblyError(ValueError):
    """The chunks do not make the file the manifest announced."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def assemble(chunks: list[bytes], *, chunk_sha256: list[str], sha256: str, size_bytes: int) -> bytes:
    """Join chunks, checking each chunk's hash, the total size and the file's hash."""
    if len(chunks) != len(chunk_sha256):
        raise AssemblyError("chunk_count_mismatch", f"have {len(chunks)} chunks, manifest lists {len(chunk_sha256)}")
    for index, (chunk, expected) in enumerate(zip(chunks, chunk_sha256, strict=True)):
        if sha256_hex(chunk) != expected:
            raise AssemblyError("chunk_checksum_mismatch", f"chunk {index} does not match its SHA-256")
    content = b"".join(chunks)
    if len(content) != size_bytes:
        raise AssemblyError("size_mismatch", f"assembled {len(content)} bytes, manifest says {size_bytes}")
    if sha256_hex(content) != sha256:
        raise AssemblyError("checksum_mismatch", "assembled file does not match the manifest's SHA-256")
    return content
