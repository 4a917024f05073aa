"""Nothing lost, provably: for every domain, reversing the forward mapping gives back the
source record exactly: any Unicode, missing optionals, unknown fields, nested lists of
any length, values in odd forms."""

from __future__ import annotations

import json
from datetime import UTC, date, time
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.catalog.domains import Domain
from shared.mapping import MAPPINGS, Mapped, map_record, reverse_record

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalar = (
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_value = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8
)
words = st.text(min_size=1, max_size=30).filter(lambda s: s.strip())
short = lambda n: st.text(min_size=1, max_size=n).filter(lambda s: s.strip())  # noqa: E731
ident = st.from_regex(r"[a-z]{1,8}-[0-9]{1,4}", fullmatch=True)
day = st.dates(date(1990, 1, 1), date(2035, 12, 31))
day_text = day.flatmap(lambda d: st.sampled_from([d.isoformat(), f"{d:%d.%m.%Y}", f"{d.isoformat()}T00:00:00.000Z"]))
stamp = st.datetimes().map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z")
money = st.decimals(Decimal("0.01"), Decimal("99999"), places=2).flatmap(
    lambda d: st.sampled_from([float(d), str(d), str(d).replace(".", ","), int(d) if d == int(d) else float(d)])
)
extra_fields = st.dictionaries(st.text(max_size=10).map(lambda k: f"x_{k}"), json_value, max_size=3)


@st.composite
def time_range(draw: Any) -> tuple[str, str]:
    start = draw(st.times(time(0, 0), time(22, 0)).map(lambda t: t.replace(second=0, microsecond=0)))
    minutes = draw(st.integers(1, 60))
    end = time(start.hour + (start.minute + minutes) // 60, (start.minute + minutes) % 60)
    fmt = draw(st.sampled_from(["%H:%M", "%-H:%M"]))
    return start.strftime(fmt), end.strftime(fmt)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def record(required: dict[str, st.SearchStrategy[Any]], **optionals: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(st.fixed_dictionaries({"id": ident, **required}), optional(**optionals), extra_fields).map(
        lambda parts: {**parts[2], **parts[1], **parts[0]}
    )


WELL_FORMED: dict[Domain, st.SearchStrategy[dict[str, Any]]] = {
    Domain.STUDENTS: record(
        {
            "name": words,
            "email": short(255),
            "status": st.sampled_from(["active", "inactive", " Active"]),
            "joinDate": day_text,
            "dateOfBirth": day_text,
        },
        phone=st.text(max_size=20),
        classId=ident | st.just(""),
        avatar=st.text(max_size=20) | st.none(),
        parentContact=st.text(max_size=40).filter(lambda s: len(s) <= 20 or " - " not in s),
        parentEmail=st.text(max_size=30),
        placeOfBirth=st.text(max_size=30),
        address=st.text(max_size=60),
        hasDiscount=st.booleans() | st.sampled_from(["true", 0]),
        discountType=st.sampled_from(["relatives", "social_case", "single_parent", "free_of_charge"]),
        discountAmount=money,
        emergencyContact=optional(name=st.text(max_size=20), relationship=st.text(max_size=20), phone=st.text(max_size=20)),
        academicInfo=optional(
            level=st.text(max_size=10), gpa=st.sampled_from([3.5, "3,8", 4, "2.25", 0]), enrollmentDate=day_text
        ),
        paymentDue=json_value,
    ),
    Domain.TEACHERS: record(
        {"name": words, "email": short(255), "subject": short(100), "joinDate": day_text},
        phone=st.text(max_size=20),
        avatar=st.text(max_size=10),
        notes=st.text(),
        classIds=st.lists(ident),
        bio=st.text(),
        qualifications=st.lists(st.text(max_size=10)),
        status=st.sampled_from(["active", "inactive", "on leave"]),
        createdAt=stamp,
        updatedAt=stamp | st.text(max_size=10),
    ),
    Domain.CLASSROOMS: record(
        {"name": short(100)},
        location=st.text(max_size=40),
        capacity=st.integers(1, 500) | st.sampled_from(["30"]),
        createdDate=stamp,
        lastUpdated=stamp,
        equipment=st.lists(st.text(max_size=10)),
        status=st.sampled_from(["active", "inactive"]),
    ),
    Domain.CLASSES: record(
        {
            "name": words,
            "level": short(50),
            "teacher": st.fixed_dictionaries(
                {"id": ident}, optional={"name": st.text(max_size=10), "subject": st.text(max_size=10)}
            ),
            "roomId": ident,
        },
        room=st.text(max_size=10),
        description=st.text(),
        maxStudents=st.integers(1, 40),
        status=st.sampled_from(["active", "completed"]),
        schedule=st.lists(
            st.tuples(st.sampled_from(["Monday", "Sunday", "tuesday"]), time_range(), extra_fields).map(
                lambda t: {**t[2], "day": t[0], "startTime": t[1][0], "endTime": t[1][1]}
            ),
            max_size=4,
        ),
        studentIds=st.lists(ident),
        students=st.integers(0, 30),
        price=money,
        createdAt=stamp,
        updatedAt=stamp,
    ),
    Domain.PAYMENT_OBLIGATIONS: record(
        {
            "studentId": ident,
            "type": short(100),
            "amount": money,
            "dueDate": day_text,
            "status": st.sampled_from(["pending", "partial", "paid", "overdue"]),
        },
        studentName=st.text(max_size=20),
        period=st.text(max_size=50),
        notes=st.text(),
        createdAt=stamp,
        updatedAt=stamp,
    ),
    Domain.PAYMENTS: record(
        {
            "obligationId": ident,
            "amount": money,
            "date": day_text,
            "method": st.sampled_from(["cash", "card", "transfer", "other"]),
        },
        studentId=ident,
        studentName=st.text(max_size=20),
        reference=st.text(max_size=10),
        notes=st.text(),
        createdBy=st.text(max_size=10),
        createdAt=stamp,
        updatedAt=stamp,
    ),
    Domain.ATTENDANCE: record(
        {
            "classId": ident,
            "sessionDate": day_text,
            "studentRecords": st.lists(
                st.tuples(
                    ident,
                    st.sampled_from(["present", "absent", "late", "excused"]),
                    optional(
                        homeworkCompleted=st.booleans(),
                        notes=st.text(max_size=30),
                        studentName=st.text(max_size=10),
                        homeworkNotes=st.text(max_size=10),
                    ),
                ).map(lambda t: {**t[2], "studentId": t[0], "status": t[1]}),
                min_size=1,
                max_size=6,
                unique_by=lambda e: e["studentId"],
            ),
        },
        className=st.text(max_size=10),
        teacherId=ident,
        teacherName=st.text(max_size=10),
        createdAt=stamp,
        updatedAt=stamp,
    ),
    Domain.ASSESSMENTS: record(
        {"classId": ident, "title": words, "date": day_text},
        type=st.sampled_from(["Homework", "Test", "Quiz", "Project", "Participation", "Oral exam", "quiz"]),
        totalPoints=st.integers(1, 200) | st.sampled_from(["100", 12.5]),
        className=st.text(max_size=10),
        description=st.text(),
        createdAt=stamp,
        updatedAt=stamp,
    ),
    Domain.GRADES: record(
        {"assessmentId": ident, "studentId": ident, "value": st.integers(0, 100) | short(10)},
        studentName=st.text(max_size=10),
        comments=st.text(),
        dateRecorded=day_text,
    ),
    Domain.PRIVATE_LESSONS: st.tuples(
        record(
            {
                "studentId": ident,
                "teacherId": ident,
                "classroomId": ident,
                "subject": short(100),
                "date": day_text,
                "status": st.sampled_from(["scheduled", "completed", "cancelled"]),
            },
            notes=st.text(),
            studentName=st.text(max_size=10),
            teacherName=st.text(max_size=10),
            classroomName=st.text(max_size=10),
            paymentObligation=st.fixed_dictionaries(
                {"amount": money, "status": st.sampled_from(["pending", "paid"])},
                optional={"id": ident, "dueDate": day_text, "notes": st.text(max_size=10), "createdAt": stamp},
            ),
            paymentRecords=st.lists(
                st.fixed_dictionaries(
                    {"amount": money, "paymentDate": day_text, "method": st.sampled_from(["cash", "card"])},
                    optional={"id": ident, "notes": st.text(max_size=10), "createdAt": stamp},
                ),
                max_size=4,
            ),
            createdAt=stamp,
            updatedAt=stamp,
        ),
        time_range(),
    ).map(lambda t: {**t[0], "startTime": t[1][0], "endTime": t[1][1]}),
}


def round_trip(domain: Domain, source: dict[str, Any]) -> Any:
    legacy_id = str(source.get("id", "x")).strip() or "x"
    result = map_record(domain, "school-a", legacy_id, source, {}, default_ts="2024-06-01T12:00:00+00:00", zone=UTC)
    if not isinstance(result, Mapped):
        return result
    on_the_wire = json.loads(json.dumps(result.rows))  # rows travel as JSON between services
    return reverse_record(domain, on_the_wire)


def test_every_domain_has_a_mapping_and_a_generator() -> None:
    assert set(MAPPINGS) == set(Domain) == set(WELL_FORMED)


def _check_well_formed(domain: Domain, source: dict[str, Any]) -> None:
    rebuilt = round_trip(domain, source)
    assert isinstance(rebuilt, dict), rebuilt
    assert json.dumps(rebuilt, sort_keys=True) == json.dumps(source, sort_keys=True)


def _check_anything(domain: Domain, source: dict[str, Any]) -> None:
    rebuilt = round_trip(domain, source)
    if isinstance(rebuilt, dict):
        assert json.dumps(rebuilt, sort_keys=True) == json.dumps(source, sort_keys=True)
    else:
        assert rebuilt.reason and rebuilt.message


def _make(domain: Domain) -> tuple[Any, Any]:
    @FAST
    @given(WELL_FORMED[domain])
    def well_formed(source: dict[str, Any]) -> None:
        _check_well_formed(domain, source)

    @FAST
    @given(
        st.tuples(WELL_FORMED[domain], st.dictionaries(st.text(max_size=12), json_value, max_size=4)).map(
            lambda t: {**t[0], **t[1]}
        )
    )
    def anything(source: dict[str, Any]) -> None:
        _check_anything(domain, source)

    return well_formed, anything


for _domain in Domain:
    (
        globals()[f"test_{_domain.value}_well_formed_records_map_and_reverse_exactly"],
        globals()[f"test_{_domain.value}_any_record_is_rejected_or_reverses_exactly"],
    ) = _make(_domain)
