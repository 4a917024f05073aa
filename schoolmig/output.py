"""What every command prints, one way: data on stdout, everything else (progress, hints,
errors) on stderr; times in ISO 8601 (UTC, ``Z``), in plain and JSON output alike."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from shared.catalog.timezones import iso_utc

iso = iso_utc


def data_console() -> Console:
    """Where tables go: stdout, as wide as a terminal is, or as wide as they need when stdout
    is a file or a pipe (nothing folded for a width nobody sees)."""
    return Console() if sys.stdout.isatty() else Console(width=1000)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def to_json(data: Any, *, one_line: bool = False) -> str:
    return json.dumps(data, indent=None if one_line else 2, ensure_ascii=False, default=_plain)


def print_json(data: Any) -> None:
    print(to_json(data), flush=True)
