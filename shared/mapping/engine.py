"""Nothing lost, provably: the bookkeeping every domain mapping shares. Pure.

A domain declares ``forward`` (record -> rows) and ``render`` (rows -> the source keys
the columns can rebuild, in their canonical form). The engine runs ``render`` on the
forward result and compares it with the record, key by key, strictly as JSON values
(``1``, ``1.0``, ``"1"`` and ``true`` all differ):

- a key whose rebuilt value is not identical keeps its original in ``extras.source``;
- a key the render invents that the record lacked is listed in ``extras.absent``;
- a key no column covers goes to ``extras.unmapped``.

``reverse(rows) = render(rows)`` patched with those extras, so the round trip is exact by
construction. Nested lists (``schedule``, ``studentRecords``, ``paymentRecords``) and
nested objects that become rows of their own (``paymentObligation``) are handled per
entry the same way, their extras on their own row, so a list is kept whole only when it
could not be mapped entry by entry.

Record-level extras live on the primary row under ``extras.record``; an entry's under
``extras.entry`` (its position) and ``extras.item``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from shared.catalog.tables import TABLES

TIMESTAMP_COLUMNS = frozenset({"created_at", "updated_at"})
_TIMESTAMPED = {name: TIMESTAMP_COLUMNS & set(spec.column_names) for name, spec in TABLES.items()}

Row = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Context:
    """What a record's mapping knows beyond the record: ``hints`` ingest resolved over the whole
    snapshot (e.g. ``classroom_id`` for a class without ``roomId``) and the school's time zone,
    in which a moment written into a date-only field is read (``parsing.parse_date``)."""

    zone: tzinfo | None
    """None: a moment's date as written (a school mapped before zones, ``timezones.AS_WRITTEN``)."""
    hints: Mapping[str, str] = field(default_factory=dict)


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON, strictly: ``1``, ``1.0``, ``"1"`` and ``true`` all differ (so does a
    tuple from a list, which JSON cannot tell apart but a reverse must not rely on)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _differs(a: Any, b: Any) -> bool:
    return not _same(a, b)


def _extras(original: dict[str, Any], rebuilt: dict[str, Any], handled: frozenset[str]) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    source = {k: original[k] for k in handled if k in original and (k not in rebuilt or _differs(rebuilt[k], original[k]))}
    absent = sorted(k for k in rebuilt if k not in original)
    unmapped = {k: v for k, v in original.items() if k not in handled}
    if source:
        extras["source"] = source
    if absent:
        extras["absent"] = absent
    if unmapped:
        extras["unmapped"] = unmapped
    return extras


def _patch(rebuilt: dict[str, Any], extras: dict[str, Any]) -> dict[str, Any]:
    result = {k: v for k, v in rebuilt.items() if k not in set(extras.get("absent", ()))}
    result.update(extras.get("source", {}))
    result.update(extras.get("unmapped", {}))
    return result


@dataclass(frozen=True)
class Child:
    """Rows of ``table`` made from the entries of ``record[key]`` (a list, or one object if ``single``)."""

    key: str
    table: str
    handled: frozenset[str]
    render: Callable[[dict[str, Any]], dict[str, Any]]
    single: bool = False

    def rows(self, rows: list[Row]) -> list[dict[str, Any]]:
        found = [values for table, values in rows if table == self.table]
        return sorted(found, key=lambda v: v.get("extras", {}).get("entry", 0))

    def rebuild(self, rows: list[Row]) -> Any:
        entries = [_patch(self.render(v), v.get("extras", {}).get("item", {})) for v in self.rows(rows)]
        if self.single:
            return entries[0] if entries else None
        return entries


@dataclass(frozen=True)
class DomainMapping:
    primary_table: str
    handled: frozenset[str]
    forward: Callable[[str, str, dict[str, Any], Context], list[Row]]
    render: Callable[[list[Row]], dict[str, Any]]
    children: tuple[Child, ...] = field(default_factory=tuple)

    @property
    def all_handled(self) -> frozenset[str]:
        return self.handled | {c.key for c in self.children}

    def primary(self, rows: list[Row]) -> dict[str, Any]:
        candidates = [v for t, v in rows if t == self.primary_table]
        return min(candidates, key=lambda v: v.get("extras", {}).get("entry", 0))

    def rebuild(self, rows: list[Row]) -> dict[str, Any]:
        rebuilt = self.render(rows)
        for child in self.children:
            value = child.rebuild(rows)
            if value is not None:
                rebuilt[child.key] = value
        return rebuilt

    def map(
        self,
        school_id: str,
        legacy_id: str,
        record: dict[str, Any],
        context: Context,
        default_ts: str | None = None,
    ) -> list[Row]:
        """Rows for one record (parents first), each with its ``extras``; raises ``Reject``.

        ``default_ts`` (the snapshot's time) fills ``created_at``/``updated_at`` where the
        record has none, before the bookkeeping, so the reverse knows the record lacked them.
        """
        rows = self.forward(school_id, legacy_id, record, context)
        if default_ts is not None:
            for table, values in rows:
                for column in _TIMESTAMPED[table]:
                    if values.get(column) is None:
                        values[column] = default_ts
        for child in self.children:
            found = record.get(child.key)
            originals: list[Any] = [found] if child.single else list(found or ())
            for index, values in enumerate(child.rows(rows)):
                item = _extras(originals[index], child.render(values), child.handled)
                values["extras"] = {**values.get("extras", {}), "entry": index, **({"item": item} if item else {})}
        for _, values in rows:
            values.setdefault("extras", {})
        primary = self.primary(rows)
        extras = _extras(record, self.rebuild(rows), self.all_handled)
        if extras:
            primary["extras"] = {**primary["extras"], "record": extras}
        return rows

    def reverse(self, rows: list[Row]) -> dict[str, Any]:
        """The source record, rebuilt from its rows alone."""
        return _patch(self.rebuild(rows), self.primary(rows).get("extras", {}).get("record", {}))
