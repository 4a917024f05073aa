"""The record schemas a client reads (``shared.mapping.schemas``, ``docs/schemas/``) say what the
mapping does: every key it keeps is described, a key marked required is refused when it is
missing and no other key is, and every record the round-trip tests generate validates."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.catalog.domains import Domain
from shared.mapping import MAPPINGS, Mapped, Rejected, map_record
from shared.mapping.schemas import RECORDS, record_schema
from tests.unit.test_round_trip import WELL_FORMED

SOME = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def mapped(domain: Domain, record: dict[str, Any]) -> Mapped | Rejected:
    hints = {"classroom_id": "room-1"} if domain is Domain.CLASSES else {}
    return map_record(domain, "school-a", str(record["id"]), record, hints, zone=UTC)


@pytest.mark.parametrize("domain", list(Domain))
def test_every_key_the_mapping_keeps_is_described(domain: Domain) -> None:
    mapping = MAPPINGS[domain]
    properties, required = RECORDS[domain]
    assert mapping.all_handled <= set(properties), sorted(mapping.all_handled - set(properties))
    assert set(required) <= set(properties)
    jsonschema.Draft202012Validator.check_schema(record_schema(domain))


@pytest.mark.parametrize("domain", list(Domain))
@SOME
@given(data=st.data())
def test_a_generated_record_validates_and_a_key_is_required_exactly_when_its_absence_is_refused(
    domain: Domain, data: st.DataObject
) -> None:
    record = data.draw(WELL_FORMED[domain])
    schema = record_schema(domain)
    jsonschema.validate(record, schema)
    if not isinstance(mapped(domain, record), Mapped):
        return  # a well-formed shape the mapping still refuses (a time range the wrong way round): not about keys
    _, required = RECORDS[domain]
    for key in [k for k in record if k != "id"]:  # (a record without an id is ingest's to refuse)
        without = {k: v for k, v in record.items() if k != key}
        outcome = mapped(domain, without)
        refused = isinstance(outcome, Rejected) and outcome.reason == "missing_required"
        if key in required:
            assert refused, f"{key} is marked required but a record without it maps"
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(without, schema)
        elif key not in required:
            assert not refused, f"{key} is not marked required but a record without it is refused: {outcome}"


def test_a_refused_value_is_refused_by_the_schema_too() -> None:
    schema = record_schema(Domain.STUDENTS)
    good = {"id": "s-1", "name": "A", "email": "a@x", "status": " Active", "joinDate": "2024-01-01", "dateOfBirth": "2010-05-05"}
    jsonschema.validate(good, schema)
    for bad in ({"status": "graduated"}, {"name": "   "}, {"email": "x" * 256}, {"hasDiscount": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, **bad}, schema)
        assert not isinstance(mapped(Domain.STUDENTS, {**good, **bad}), Mapped)
