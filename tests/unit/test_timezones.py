"""Dates the app wrote through ``toISOString()`` land on the school's local calendar date.

The app builds a local date and stores ``date.toISOString()`` (a moment, in UTC) or
``toISOString().split('T')[0]`` (``../shared/spec/source-format.md``). Generated over zones
east and west of UTC, half-hour and 45-minute offsets, both DST edges and the date line.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shared.catalog.timezones import SchoolZone, UnknownZone, ZoneSource, choose, zone_of
from shared.mapping.parsing import parse_date

ZONES = [
    "Europe/Skopje",  # UTC+1, +2 in summer: the issue's school
    "America/New_York",
    "Asia/Kolkata",  # +5:30
    "Asia/Kathmandu",  # +5:45
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Kiritimati",  # +14
    "Pacific/Pago_Pago",  # -11
    "America/St_Johns",  # -3:30, DST
    "America/Sao_Paulo",  # DST used to start at local midnight: 00:00 did not exist
    "UTC",
]

days = st.dates(date(1950, 1, 1), date(2100, 12, 31))
times = st.times(time(0, 0), time(23, 59, 59, 999000)).map(lambda t: t.replace(microsecond=t.microsecond // 1000 * 1000))


def to_iso_string(local: datetime) -> str:
    """JavaScript's ``Date.prototype.toISOString()`` of a local moment."""
    moment = local.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def js_local(day: date, at: time, zone: str) -> datetime:
    """``new Date(y, m, d, h, …)`` in the browser's zone: a time that does not exist (a DST
    gap) moves forward, as browsers do."""
    local = datetime.combine(day, at, tzinfo=zone_of(zone))
    # Round-tripping through UTC normalises a nonexistent wall time (PEP 495: fold=0 gives
    # the offset before the gap, which lands after it).
    return local.astimezone(UTC).astimezone(zone_of(zone))


@given(zone=st.sampled_from(ZONES), day=days, at=st.sampled_from([time(0, 0), time(12, 0), time(23, 59)]) | times)
@example(zone="Europe/Skopje", day=date(2024, 3, 31), at=time(0, 0))  # the issue's date, the spring DST day
@example(zone="Europe/Skopje", day=date(2024, 10, 27), at=time(0, 0))  # the autumn DST day
@example(zone="Europe/Skopje", day=date(2024, 3, 31), at=time(23, 59))
@example(zone="America/New_York", day=date(2024, 3, 10), at=time(0, 0))
@example(zone="America/New_York", day=date(2024, 11, 3), at=time(23, 30))
@example(zone="America/Sao_Paulo", day=date(2018, 11, 4), at=time(0, 0))  # 00:00 did not exist that day
@example(zone="Pacific/Kiritimati", day=date(2024, 1, 1), at=time(0, 0))
@settings(max_examples=400, deadline=None)
def test_a_moment_the_app_wrote_for_a_local_day_is_that_day_in_the_schools_zone(zone: str, day: date, at: time) -> None:
    local = js_local(day, at, zone)
    written = to_iso_string(local)
    assert parse_date(written, "dateOfBirth", zone=zone_of(zone)) == local.date()
    if local.date() == day:  # not moved by a DST gap: the day the user picked
        assert parse_date(written, "dateOfBirth", zone=zone_of(zone)) == day


@given(zone=st.sampled_from(ZONES), day=days)
def test_a_date_only_value_stays_as_written_in_every_zone(zone: str, day: date) -> None:
    """The app may have shifted it already (``toISOString().split('T')[0]``): no value can
    show that, so it is never moved."""
    assert parse_date(day.isoformat(), "joinDate", zone=zone_of(zone)) == day
    assert parse_date(f"{day:%d.%m.%Y}", "joinDate", zone=zone_of(zone)) == day


@given(zone=st.sampled_from(ZONES), day=days, at=times)
def test_a_local_datetime_without_an_offset_keeps_its_date(zone: str, day: date, at: time) -> None:
    assert parse_date(datetime.combine(day, at).isoformat(), "dueDate", zone=zone_of(zone)) == day


@given(zone=st.sampled_from(ZONES), offset_minutes=st.integers(-14 * 60, 14 * 60), day=days, at=times)
def test_a_moment_with_any_offset_is_its_day_in_the_schools_zone(zone: str, offset_minutes: int, day: date, at: time) -> None:
    """``+02:00`` or ``Z``: the offset says which moment; the school's zone says which day,
    except an exact midnight under the zone's other offset of the day (next test)."""
    moment = datetime.combine(day, at, tzinfo=timezone(timedelta(minutes=offset_minutes)))
    local = moment.astimezone(zone_of(zone))
    found = parse_date(moment.isoformat(), "date", zone=zone_of(zone))
    assert found == local.date() or (found == local.date() + timedelta(days=1) and local.hour >= 22)


@given(zone=st.sampled_from(ZONES), day=days)
@example(zone="Europe/Skopje", day=date(2024, 3, 31))
@example(zone="Europe/Skopje", day=date(2024, 10, 27))
@example(zone="Australia/Lord_Howe", day=date(2024, 4, 7))
def test_midnight_under_either_offset_of_a_dst_day_is_that_day(zone: str, day: date) -> None:
    """A browser that gives the whole DST day one offset (summer or winter) still wrote that
    day's midnight: ``2024-03-30T22:00:00.000Z`` is a local 31 March in Europe/Skopje."""
    tz = zone_of(zone)
    day_offsets = {datetime.combine(day, at, tzinfo=tz).utcoffset() for at in (time(0, 0), time(23, 59))}
    for offset in day_offsets:  # one on most days, two on a DST day
        assert offset is not None
        midnight = datetime.combine(day, time(0), tzinfo=timezone(offset))
        assert parse_date(to_iso_string(midnight), "date", zone=tz) == day


def test_the_issue_s_school_lands_every_date_on_its_own_day() -> None:
    """Europe/Skopje: a local 31 March written as ``2024-03-30T22:00:00.000Z`` (UTC read it as the 30th)."""
    skopje = zone_of("Europe/Skopje")
    assert parse_date("2024-03-30T22:00:00.000Z", "sessionDate", zone=skopje) == date(2024, 3, 31)  # the issue's example
    assert parse_date("2024-03-30T23:00:00.000Z", "sessionDate", zone=skopje) == date(2024, 3, 31)  # midnight, +01:00
    assert parse_date("2024-03-30T21:30:00.000Z", "sessionDate", zone=skopje) == date(2024, 3, 30)  # 22:30 local
    assert parse_date("2024-01-14T22:00:00.000Z", "dateRecorded", zone=skopje) == date(2024, 1, 14)  # 23:00, no DST near
    assert parse_date("2024-10-26T22:00:00.000Z", "sessionDate", zone=skopje) == date(2024, 10, 27)
    assert parse_date("2024-10-27T23:00:00.000Z", "sessionDate", zone=skopje) == date(2024, 10, 28)
    assert parse_date("2024-03-30T22:00:00.000Z", "sessionDate", zone=UTC) == date(2024, 3, 30)


def test_the_rule_that_gives_a_school_its_zone() -> None:
    assert choose("Europe/Skopje", "UTC", "tablet", "America/New_York") == SchoolZone("Europe/Skopje", ZoneSource.OPERATOR)
    assert choose(None, "Europe/Skopje", "tablet", "UTC") == SchoolZone("Europe/Skopje", ZoneSource.CLIENT, "tablet")
    assert choose(None, None, None, "Asia/Kolkata") == SchoolZone("Asia/Kolkata", ZoneSource.DEFAULT)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../../etc/passwd", "", "Europe/Skopje\x00"])
def test_a_name_that_is_not_a_zone_is_refused(name: str) -> None:
    with pytest.raises(UnknownZone):
        zone_of(name)


def test_the_machines_zone_is_what_tz_names_else_where_localtime_links(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.catalog.timezones import local_zone

    monkeypatch.setenv("TZ", "Asia/Kolkata")
    assert local_zone() == "Asia/Kolkata"
    monkeypatch.setenv("TZ", "not/a-zone")
    found = local_zone()  # /etc/localtime's, or none
    assert found is None or zone_of(found) is not None


def test_the_day_after_the_autumn_change_is_not_read_with_summer_time() -> None:
    """23:00 local on 27 October 2024 in Skopje (+01:00) is 27 October: summer time (+02:00)
    does not apply on the 28th, so the midnight it would make is not a midnight the app wrote."""
    skopje = zone_of("Europe/Skopje")
    assert parse_date("2024-10-27T22:00:00.000Z", "date", zone=skopje) == date(2024, 10, 27)
    assert parse_date("2024-10-27T23:00:00.000Z", "date", zone=skopje) == date(2024, 10, 28)


def test_a_school_from_before_zones_keeps_dates_as_written() -> None:
    """Its records were loaded reading a moment's date as written; they are read so still."""
    assert parse_date("2024-03-31T00:00:00+02:00", "date", zone=None) == date(2024, 3, 31)
    assert parse_date("2024-03-30T22:00:00.000Z", "date", zone=None) == date(2024, 3, 30)
    assert parse_date("9999-12-31T12:00:00Z", "date", zone=UTC) == date(9999, 12, 31)  # no neighbour past the calendar
