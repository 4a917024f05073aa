"""Reading JSON from outside without surprises, and telling what the pipeline cannot carry. Pure.

Every byte a client sends is read here (ingest envelopes, snapshot files, the JSON strings
inside a localStorage dump). Python's ``json`` raises more than ``JSONDecodeError``: a
``ValueError`` for an integer past the interpreter's digit limit, a ``RecursionError``
for deep nesting. :func:`load` turns all of them into :class:`JsonRefused` with a reason,
so a caller handles exactly one exception.

What parses is not yet what the rest of the pipeline can carry. :func:`unrepresentable`
names the first value in a document that would fail later, far from its cause:

- ``NaN`` / ``Infinity`` (accepted by Python's parser, not JSON; they would travel as ``null``
  and silently change the record);
- a string (or key) holding NUL (PostgreSQL's text and jsonb cannot store it) or a lone
  UTF-16 surrogate (it cannot be encoded as UTF-8 at all);
- nesting deeper than the limit (the internal topics' parser stops at 200 levels; a record
  of a real school is 3 deep);
- an integer too long to convert (kept as :class:`LongInteger` by :func:`load`).

The description is a path and a kind, never the value: it may be personal data.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic_core import to_json

#: Digits an integer may have before :func:`load` keeps it as a :class:`LongInteger`
#: instead of converting it (Python refuses past 4,300; no school value comes near 40).
MAX_INTEGER_DIGITS = 1000
DEFAULT_MAX_DEPTH = 32


class JsonRefused(ValueError):
    """The bytes are not a JSON document this pipeline reads: ``reason`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class LongInteger(float):
    """An integer literal with more digits than :data:`MAX_INTEGER_DIGITS`: its digit count,
    never converted (that is what costs time and raises). A float whose value is NaN, so
    that it can never pass for a number, and serialises as ``NaN`` (which sends the fast
    check of :func:`unrepresentable` down the careful path)."""

    def __new__(cls, digits: int) -> LongInteger:
        return super().__new__(cls, math.nan)

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _parse_int(text: str) -> int | LongInteger:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        return LongInteger(len(text))
    return int(text)


def load(data: bytes | str) -> Any:
    """The JSON document in ``data``; :class:`JsonRefused` (``invalid_json`` or
    ``too_deep``) for anything else."""
    try:
        return json.loads(data, parse_int=_parse_int)
    except RecursionError:
        raise JsonRefused("too_deep", "the JSON is nested too deeply to read") from None
    except UnicodeDecodeError as exc:
        raise JsonRefused("invalid_json", f"not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise JsonRefused("invalid_json", f"not valid JSON ({exc.msg} at {exc.pos})") from None
    except ValueError as exc:  # whatever else the parser refuses
        raise JsonRefused("invalid_json", f"not valid JSON ({type(exc).__name__})") from None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "a lone UTF-16 surrogate"
    return None


def unrepresentable(value: Any, *, max_depth: int = DEFAULT_MAX_DEPTH, path: str = "$") -> str | None:
    """Where and what the first value is that the pipeline cannot carry faithfully, or None.

    Fast for the common case (measured: the walk alone was 8 µs a record, most of what
    reading a snapshot cost): one serialisation in C proves most records clean. Only one
    that might not be (it failed to serialise, or its JSON shows ``\u0000``, ``NaN``,
    ``Infinity``, or more containers than the depth allows) is walked, iteratively (a
    hostile document must not exhaust the stack here either)."""
    try:
        text = to_json(value, inf_nan_mode="constants")
    except ValueError:  # a lone surrogate, or deeper than the serialiser goes
        text = None
    if (
        text is not None
        and b"\\u0000" not in text
        and b"NaN" not in text
        and b"Infinity" not in text
        and text.count(b"[") + text.count(b"{") <= max_depth  # fewer containers than levels allowed
    ):
        return None
    return _walk(value, max_depth, path)


def _walk(value: Any, max_depth: int, path: str) -> str | None:
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, LongInteger):
            return f"{where} is an integer of {item.digits} digits"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{where} is {item!r} (not a JSON number)"
        if isinstance(item, str):
            if (why := _bad_text(item)) is not None:
                return f"{where} holds {why}"
        elif isinstance(item, (dict, list)):
            if depth >= max_depth:
                return f"{where} is nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if (why := _bad_text(key)) is not None:
                        return f"a key in {where} holds {why}"
                    stack.append((child, f"{where}.{_safe_key(key)}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))
    return None


def printable(text: str) -> str:
    """``text`` as it can be shown, stored and sent anywhere: NUL and lone surrogates as
    visible escapes (for what is only reported, like a snapshot's unknown keys)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")


def _safe_key(key: str) -> str:
    """A key as it may appear in a path: short, and printable (keys are field names, not data)."""
    shown = key[:40].encode("ascii", "backslashreplace").decode()
    return shown if shown.isidentifier() else repr(shown)
