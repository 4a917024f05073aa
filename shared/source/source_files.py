"""Recognising the two files a client hands over (see the spec's "source format").

Shared by the SDK (to describe a file before publishing it) and ingest (to read it).
"""

from __future__ import annotations

from typing import Any

from shared.catalog.domains import EXPORT_KEYS, LOCALSTORAGE_KEYS
from shared.source import jsonsafe
from shared.wire.messages import SnapshotFormat


class UnreadableSnapshot(ValueError):
    """The file is not a JSON object at all; nothing in it can be counted."""


def load_document(content: bytes) -> dict[str, Any]:
    try:
        document = jsonsafe.load(content)
    except jsonsafe.JsonRefused as exc:
        raise UnreadableSnapshot(f"file is {exc.detail}") from None
    if not isinstance(document, dict):
        raise UnreadableSnapshot(f"file is a JSON {type(document).__name__}, expected an object")
    return document


def detect_format(document: dict[str, Any]) -> SnapshotFormat:
    """A localStorage dump holds strings under the domain keys; an export holds arrays."""
    values = [document[k] for k in document if k in LOCALSTORAGE_KEYS or k in EXPORT_KEYS]
    if values and all(isinstance(v, str) for v in values):
        return SnapshotFormat.LOCALSTORAGE_DUMP
    return SnapshotFormat.MOCKDATA_EXPORT
