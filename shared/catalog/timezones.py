"""Each school's one time zone, and which rule gave it. Pure.

The app writes a local date through ``toISOString()`` (``../shared/spec/source-format.md``),
so a date-only field can hold a moment (``2024-03-30T22:00:00.000Z`` for a local 31 March in
Europe/Skopje); the mapping reads it in the school's zone (``shared.mapping.parsing``).

The zone is, in this order:

1. ``operator``: set for the school by an operator (the signed ``set_timezone`` command, the
   CLI's ``schoolmig set-timezone`` or the HTTP API);
2. ``client``: the one its clients report (a manifest's or a change message's ``timezone``,
   which the SDK and ``HybridClient`` fill from the browser's
   ``Intl.DateTimeFormat().resolvedOptions().timeZone``);
3. ``default``: ``SCHOOLMIG_DEFAULT_TIMEZONE``.

It is fixed the first time a school's records are mapped (its first released snapshot or
first change) and the same for every record after: the data of one school is read in one
zone. An operator can set it before that, or set it again to the same zone after; a
different zone once records were mapped is refused (their dates would need mapping again,
which schoolmig does not do). A device reporting another zone is an audit note
(``device_timezone``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: The IANA name's shape (``Europe/Skopje``, ``America/Argentina/Buenos_Aires``, ``UTC``,
#: ``Etc/GMT-14``): what a client may send and an operator may set.
ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]{0,29}(/[A-Za-z0-9_+-]{1,30}){0,2}$"


class ZoneSource(StrEnum):
    OPERATOR = "operator"
    CLIENT = "client"
    DEFAULT = "default"
    LEGACY = "legacy"
    """Mapped before zones existed: a moment's date as written (:data:`AS_WRITTEN`)."""


#: The rule of schools (and raw batches) from before zones: a moment's calendar date as written
#: in its own offset. Never a client's or an operator's choice.
AS_WRITTEN = "as-written"


@dataclass(frozen=True)
class SchoolZone:
    name: str
    source: ZoneSource
    reported_by: str | None = None
    """``client``: the device whose report fixed it."""


class UnknownZone(ValueError):
    pass


@lru_cache(maxsize=1024)
def zone_of(name: str) -> ZoneInfo:
    """The zone of an IANA name; ``UnknownZone`` when the time-zone database has none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise UnknownZone(f"{name[:64]!r} is not an IANA time zone (e.g. Europe/Skopje, America/New_York, UTC)") from None


def mapping_zone(name: str) -> ZoneInfo | None:
    """The zone the mapping reads moments in (None: :data:`AS_WRITTEN`)."""
    return None if name == AS_WRITTEN else zone_of(name)


def same_zone(a: str, b: str) -> bool:
    """Two names of one zone: equal, or both UTC under another name (``Etc/UTC``, ``Zulu``)."""
    utc = {
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Etc/Zulu",
        "Zulu",
        "Etc/GMT",
        "GMT",
        "Etc/GMT0",
        "GMT0",
        "Etc/Greenwich",
        "Greenwich",
    }
    return a == b or (a in utc and b in utc)


def check_zone(name: str) -> str:
    """``name`` if it is a zone (a pydantic validator's body)."""
    zone_of(name)
    return name


def choose(operator: str | None, reported: str | None, reported_by: str | None, default: str) -> SchoolZone:
    """The zone a school's records are mapped in when nothing fixed it yet."""
    if operator is not None:
        return SchoolZone(operator, ZoneSource.OPERATOR)
    if reported is not None:
        return SchoolZone(reported, ZoneSource.CLIENT, reported_by)
    return SchoolZone(default, ZoneSource.DEFAULT)


def local_zone() -> str | None:
    """This machine's IANA zone, as a browser's ``Intl`` would report it: ``TZ`` when it names
    one, else where ``/etc/localtime`` links to; None when neither says."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name:
            try:
                return check_zone(name)
            except UnknownZone:
                continue
    return None


def iso_utc(moment: datetime) -> str:
    """An instant as every command, page and report prints it: ISO 8601, in UTC, to the second (``…Z``)."""
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
