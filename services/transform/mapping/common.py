"""Helpers every domain mapper uses: deterministic ids and the ``extras`` bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.ids import row_id


def rid(school_id: str, table: str, key: str) -> str:
    return str(row_id(school_id, table, key))


@dataclass
class Extras:
    """What the columns do not hold, so the source record can be rebuilt exactly.

    ``unmapped``: source fields that have no column. ``source``: the original value of a
    mapped field whose column holds it in another form (a datetime kept as a date, ``"850"``
    kept as 850, a contact string split in two).
    """

    record: dict[str, Any]
    consumed: set[str] = field(default_factory=set)
    source: dict[str, Any] = field(default_factory=dict)

    def take(self, key: str) -> Any:
        self.consumed.add(key)
        return self.record.get(key)

    def keep_original(self, key: str, canonical: Any) -> None:
        """Remember the original when the column's form differs from what the browser held."""
        original = self.record.get(key)
        if original != canonical or type(original) is not type(canonical):
            self.source[key] = original

    def as_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        unmapped = {k: v for k, v in self.record.items() if k not in self.consumed}
        if unmapped:
            result["unmapped"] = unmapped
        if self.source:
            result["source"] = self.source
        return result
