from datetime import UTC, date
from decimal import Decimal

import pytest

from shared.mapping.parsing import (
    Reject,
    enum,
    parse_bool,
    parse_date,
    parse_decimal,
    split_contact,
    text,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-01-15", date(2024, 1, 15)),
        ("2024-01-15T00:00:00.000Z", date(2024, 1, 15)),
        ("2024-01-15T23:30:00+01:00", date(2024, 1, 15)),  # the calendar day as written, not shifted to UTC
        ("  2024-1-5 ", date(2024, 1, 5)),
        ("15.01.2024", date(2024, 1, 15)),
        ("15.01.2024.", date(2024, 1, 15)),
        ("2024/01/15", date(2024, 1, 15)),
        ("25/12/2023", date(2023, 12, 25)),
        ("12/25/2023", date(2023, 12, 25)),
        ("07/07/2023", date(2023, 7, 7)),
    ],
)
def test_dates_in_common_formats(raw: str, expected: date) -> None:
    assert parse_date(raw, "d", zone=UTC) == expected


def test_ambiguous_day_month_is_refused_not_guessed() -> None:
    with pytest.raises(Reject) as caught:
        parse_date("03/04/2024", "d", zone=UTC)
    assert caught.value.reason == "ambiguous_date"


@pytest.mark.parametrize("raw", ["2024-02-30", "31.13.2024", "yesterday", "2024-01-15T25:00"])
def test_impossible_dates_are_refused(raw: str) -> None:
    with pytest.raises(Reject) as caught:
        parse_date(raw, "d", zone=UTC)
    assert caught.value.reason == "invalid_date"


def test_missing_dates() -> None:
    assert parse_date("", "d", zone=UTC) is None
    assert parse_date(None, "d", zone=UTC) is None
    with pytest.raises(Reject) as caught:
        parse_date("  ", "joinDate", zone=UTC, required=True)
    assert caught.value.reason == "missing_required"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(850, Decimal(850)), ("850", Decimal(850)), ("3,8", Decimal("3.8")), (" 3.75 ", Decimal("3.75")), (0.1, Decimal("0.1"))],
)
def test_numbers_from_numbers_and_strings(raw: object, expected: Decimal) -> None:
    assert parse_decimal(raw, "n") == expected


@pytest.mark.parametrize("raw", ["1.234,5", "12abc", True, "NaN", "inf"])
def test_non_numbers_are_refused(raw: object) -> None:
    with pytest.raises(Reject) as caught:
        parse_decimal(raw, "n")
    assert caught.value.reason == "invalid_number"


def test_out_of_range_and_precision_are_refused_not_clamped_or_rounded() -> None:
    with pytest.raises(Reject) as caught:
        parse_decimal(7, "gpa", minimum=Decimal(0), maximum=Decimal(4))
    assert caught.value.reason == "out_of_range"
    with pytest.raises(Reject) as caught:
        parse_decimal("3.456", "gpa", scale=2)
    assert caught.value.reason == "too_precise"
    with pytest.raises(Reject):
        parse_decimal(0, "amount", minimum=Decimal(0), exclusive_minimum=True)


def test_text_is_trimmed_and_length_checked_never_truncated() -> None:
    assert text("  Ана  ", "name") == "Ана"
    assert text("", "name") is None
    with pytest.raises(Reject) as caught:
        text("x" * 21, "phone", max_len=20)
    assert caught.value.reason == "value_too_long"
    with pytest.raises(Reject) as caught:
        text({"a": 1}, "name")
    assert caught.value.reason == "invalid_type"


def test_booleans_and_enums() -> None:
    assert parse_bool("yes", "b") is True
    assert parse_bool(0, "b") is False
    assert parse_bool(None, "b") is None
    with pytest.raises(Reject):
        parse_bool("maybe", "b")
    assert enum(" Active ", "status", frozenset({"active"})) == "active"
    with pytest.raises(Reject) as caught:
        enum("graduated", "status", frozenset({"active", "inactive"}))
    assert caught.value.reason == "invalid_enum"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Sarah Johnson - +1-555-0201", ("Sarah Johnson", "+1-555-0201")),
        ("Марија Петровска - 070 123 456", ("Марија Петровска", "070 123 456")),
        ("Sarah Johnson", ("Sarah Johnson", None)),
        ("+389 70 123 456", (None, "+389 70 123 456")),
        (" - +1-555-0201", (None, "+1-555-0201")),
        ("Anna-Maria Kostova - Smith", ("Anna-Maria Kostova - Smith", None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_parent_contact_split(raw: str | None, expected: tuple[str | None, str | None]) -> None:
    assert split_contact(raw, "parentContact") == expected
