import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.catalog.ids import NAMESPACE, row_id, row_id_text


@settings(max_examples=500)
@given(st.text(max_size=20), st.sampled_from(["students", "users", "attendance_records"]), st.text(max_size=40))
def test_the_fast_id_is_exactly_uuid5(school: str, table: str, key: str) -> None:
    expected = uuid.uuid5(NAMESPACE, f"{school}/{table}/{key}")
    assert row_id_text(school, table, key) == str(expected)
    assert row_id(school, table, key) == expected
    assert expected.version == 5


def test_the_spec_example_namespace() -> None:
    assert row_id_text("school-1", "students", "student-1") == str(
        uuid.uuid5(uuid.UUID("18acb45e-3f32-5ccf-96fe-d0fc35c83e7a"), "school-1/students/student-1")
    )
