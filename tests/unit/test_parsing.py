from datetime import UTC, date
from decimal import Decimal, localcontext

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.mapping.parsing import (
    INT_MAX,
    Reject,
    decimal_places,
    enum,
    numeric_max,
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


# Every numeric column the mappings write, as PostgreSQL declares it: (precision, scale), or
# None for INT. A value the parser accepts must fit its column exactly, or the database would
# refuse (or round) it after the pipeline had counted it as mapped.
COLUMNS = {"INT": (None, 0), "DECIMAL(10,2)": (10, 2), "DECIMAL(6,2)": (6, 2), "DECIMAL(3,2)": (3, 2)}


def _fits(value: Decimal, precision: int | None, scale: int) -> bool:
    """PostgreSQL's own rule, computed with a context wide enough never to round."""
    with localcontext() as wide:
        wide.prec = 100_000
        if value != value.quantize(Decimal(1).scaleb(-scale)):
            return False
        if precision is None:
            return -(2**31) <= value <= 2**31 - 1
        return abs(value) < Decimal(10) ** (precision - scale)


_digits = st.text("0123456789", min_size=1, max_size=60)
numbers = st.one_of(
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.builds(lambda i, f, comma: f"{i}{',' if comma else '.'}{f}", _digits, _digits, st.booleans()),
    st.builds(lambda i, z: i + "0" * z, _digits, st.integers(0, 60)),
)


@given(numbers, st.sampled_from(sorted(COLUMNS)))
@example(10**40, "INT")  # longer than the decimal context's 28 digits: quantize would raise
@example("1" + "0" * 40 + ".5", "DECIMAL(10,2)")
@example("2147483648", "INT")
@example("99999999.995", "DECIMAL(10,2)")
def test_a_number_is_accepted_only_when_it_fits_its_column_and_anything_else_is_a_reject(raw: object, column: str) -> None:
    precision, scale = COLUMNS[column]
    maximum = INT_MAX if precision is None else numeric_max(precision, scale)
    try:
        value = parse_decimal(raw, "n", minimum=-maximum, maximum=maximum, scale=scale)
    except Reject as refused:
        assert refused.reason in {"invalid_number", "out_of_range", "too_precise"}
        return
    assert value is not None and _fits(value, precision, scale), (raw, column, value)
    assert value == Decimal(str(raw).strip().replace(",", ".")), "never rounded"


@pytest.mark.parametrize(
    ("value", "places"),
    [
        (Decimal("1.50"), 1),
        (Decimal("100"), 0),
        (Decimal("1E+3"), 0),
        (Decimal("0.000"), 0),
        (Decimal("-0.125"), 3),
        (Decimal("1" * 40 + ".1"), 1),
    ],
)
def test_decimal_places_counts_what_the_value_needs(value: Decimal, places: int) -> None:
    assert decimal_places(value) == places
