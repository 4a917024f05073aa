"""Benchmarks: figures printed and written under .bench/, never pass/fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_figures(path: Path, result: dict[str, Any]) -> None:
    """Print the figures and write them to ``path`` (its folder made if need be)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
