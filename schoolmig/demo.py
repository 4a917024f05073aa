"""Demo data: raw localStorage dumps at the spec's volumes, with what real data looks like.

Deterministic for a seed. Each school gets every domain; the mess is sprinkled in on
purpose (Cyrillic names, numbers as strings, other date formats, a student without a
date of birth, a duplicated id, a shared email, SQL- and HTML-looking notes, UI keys that
are not data, and in the last school a localStorage value cut short mid-write).
"""

from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

FIRST = ["Ана", "Марко", "Елена", "Stefan", "Ivana", "Никола", "Sara", "Петар", "Mila", "Давид", "Lena", "Филип"]
LAST = ["Петровска", "Стојанов", "Nikolova", "Trajkovski", "Јованова", "Dimitrov", "Ilievska", "Костов"]
SUBJECTS = ["English", "German", "Mathematics", "Physics", "Piano", "Informatics", "French"]
LEVELS = ["A1", "A2", "B1", "B2", "C1"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
NOTES = [
    "Needs extra practice",
    "'; DROP TABLE students; --",
    "<script>alert('x')</script>",
    "Одличен напредок",
    "x" * 3000,
]


def _iso(d: datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _person(rng: random.Random, n: int, role: str) -> dict[str, Any]:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    return {
        "name": name,
        "email": f"{role}{n}@school.example",
        "phone": f"+389 7{rng.randint(0, 9)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
    }


def school_dump(index: int, seed: int, *, messy: bool = True) -> dict[str, str]:
    """One school's localStorage; ``messy=False`` leaves out what real data adds (see the module doc)."""
    rng = random.Random(seed * 1000 + index)
    start = datetime(2024, 1, 8)
    n_students, n_teachers = rng.randint(50, 100), rng.randint(10, 20)
    n_rooms, n_classes = rng.randint(10, 15), rng.randint(15, 30)

    rooms = [
        {
            "id": f"classroom-{i}",
            "name": f"Room {100 + i}",
            "location": f"Floor {i % 3}",
            "capacity": rng.randint(8, 30),
            "createdDate": _iso(start),
            "lastUpdated": _iso(start),
            "equipment": ["whiteboard"],
            "type": "standard",
            "status": "active",
        }
        for i in range(1, n_rooms + 1)
    ]
    teachers = []
    for i in range(1, n_teachers + 1):
        teachers.append(
            {
                "id": f"teacher-{i}",
                **_person(rng, i, "teacher"),
                "subject": rng.choice(SUBJECTS),
                "joinDate": _iso(start - timedelta(days=rng.randint(100, 2000))),
                "classIds": [],
                "bio": "Experienced teacher",
                "qualifications": ["MA"],
                "status": "active",
            }
        )
    classes = []
    for i in range(1, n_classes + 1):
        teacher = rng.choice(teachers)
        room = rng.choice(rooms)
        teacher["classIds"].append(f"class-{i}")
        classes.append(
            {
                "id": f"class-{i}",
                "name": f"{teacher['subject']} {rng.choice(LEVELS)}",
                "teacher": {"id": teacher["id"], "name": teacher["name"], "subject": teacher["subject"]},
                "room": room["name"],
                **({"roomId": room["id"]} if rng.random() > 0.2 else {}),
                "schedule": [
                    {"day": d, "startTime": rng.choice(["9:00", "17:00", "18:30"]), "endTime": "19:30"}
                    for d in rng.sample(DAYS, 2)
                ],
                "students": 0,
                "maxStudents": 12,
                "studentIds": [],
                "subject": teacher["subject"],
                "level": rng.choice(LEVELS),
                "price": rng.choice([850, "1200", 1500]),
                "duration": 90,
                "description": "",
                "requirements": "",
                "objectives": [],
                "materials": [],
                "createdAt": _iso(start),
                "updatedAt": _iso(start),
                "color": "#3366ff",
                "status": "active",
            }
        )
    students = []
    for i in range(1, n_students + 1):
        cls = rng.choice(classes)
        cls["studentIds"].append(f"student-{i}")
        cls["students"] += 1
        joined = start + timedelta(days=rng.randint(0, 90))
        parent = _person(rng, i, "parent")
        student = {
            "id": f"student-{i}",
            **_person(rng, i, "student"),
            "classId": cls["id"],
            "status": rng.choice(["active", "active", "inactive"]),
            "joinDate": _iso(joined) if i % 7 else joined.strftime("%d.%m.%Y"),
            "parentContact": rng.choice([f"{parent['name']} - {parent['phone']}", parent["name"], parent["phone"]]),
            "parentEmail": parent["email"],
            "dateOfBirth": (date(2008, 1, 1) + timedelta(days=rng.randint(0, 2500))).isoformat(),
            "address": rng.choice(["ул. Македонија 12, Скопје", "Partizanska 3, Bitola"]),
            "hasDiscount": i % 9 == 0,
            "paymentDue": rng.randint(0, 3000),
            "academicInfo": {
                "level": rng.choice(LEVELS),
                "gpa": rng.choice([3.5, "3,8", 2.9, "4"]),
                "enrollmentDate": joined.date().isoformat(),
            },
        }
        if i % 9 == 0:
            student["discountType"], student["discountAmount"] = "relatives", "10"
        if i % 5 == 0:
            student["emergencyContact"] = {"name": parent["name"], "relationship": "parent", "phone": parent["phone"]}
        students.append(student)
    # What real data looks like: a student with no date of birth, a duplicated record, a shared email.
    if messy:
        del students[3]["dateOfBirth"]
        students.append(dict(students[10]))
        students[20]["email"] = students[21]["email"]
    names = {s["id"]: s["name"] for s in students}
    placeholder = (lambda sid: "?") if messy else names.__getitem__

    obligations, payments = [], []
    for s in students[: rng.randint(50, n_students)]:
        for k in range(rng.randint(3, 6)):
            oid = f"obligation-{s['id']}-{k}"
            amount = rng.choice([850, 1200, 3000])
            status = rng.choice(["pending", "partial", "paid", "overdue"])
            obligations.append(
                {
                    "id": oid,
                    "studentId": s["id"],
                    "studentName": s["name"],
                    "type": "Tuition Fee",
                    "amount": amount,
                    "dueDate": (start + timedelta(days=30 * k)).date().isoformat(),
                    "period": "Spring 2024",
                    "status": status,
                    "createdAt": _iso(start),
                    "updatedAt": _iso(start),
                }
            )
            if status in ("partial", "paid") and len(payments) < 300:
                payments.append(
                    {
                        "id": f"payment-{len(payments) + 1}",
                        "obligationId": oid,
                        "studentId": s["id"],
                        "studentName": s["name"],
                        "amount": amount if status == "paid" else amount // 2,
                        "date": (start + timedelta(days=30 * k + 3)).date().isoformat(),
                        "method": rng.choice(["cash", "card", "transfer"]),
                        "createdBy": "admin",
                        "createdAt": _iso(start),
                        "updatedAt": _iso(start),
                    }
                )

    attendance, assessments, grades = [], [], []
    target_rows = rng.randint(2000, 5000)
    rows = 0
    session = 0
    taught = [c for c in classes if c["studentIds"]]
    while rows < target_rows:
        empty = messy and session < 2
        cls = classes[0] | {"studentIds": []} if empty else taught[session % len(taught)]  # two empty sessions
        session += 1
        day = start + timedelta(days=session)
        records = [
            {
                "studentId": sid,
                "studentName": placeholder(sid),
                "status": rng.choice(["present", "present", "absent", "late", "excused"]),
                **({"homeworkCompleted": rng.random() > 0.3} if rng.random() > 0.5 else {}),
            }
            for sid in cls["studentIds"]
        ]
        rows += max(len(records), 1)
        attendance.append(
            {
                "id": f"attendance-{session}",
                "classId": cls["id"],
                "className": cls["name"],
                "teacherId": cls["teacher"]["id"],
                "teacherName": cls["teacher"]["name"],
                "sessionDate": day.date().isoformat(),
                "createdAt": _iso(day),
                "updatedAt": _iso(day),
                "studentRecords": records,
            }
        )
    target_grades = rng.randint(1000, 3000)
    while len(grades) < target_grades:
        cls = rng.choice(classes)
        aid = f"assessment-{len(assessments) + 1}"
        assessments.append(
            {
                "id": aid,
                "classId": cls["id"],
                "className": cls["name"],
                "title": "Unit test",
                "type": rng.choice(["Homework", "Test", "Quiz", "Project", "Participation", "Oral exam"]),
                "totalPoints": 100,
                "date": start.date().isoformat(),
                "createdAt": _iso(start),
                "updatedAt": _iso(start),
            }
        )
        for sid in cls["studentIds"]:
            grades.append(
                {
                    "id": f"grade-{len(grades) + 1}",
                    "assessmentId": aid,
                    "studentId": sid,
                    "studentName": placeholder(sid),
                    "value": rng.choice([90, 75, "A", "B+", 100]),
                    "comments": rng.choice(NOTES) if rng.random() < 0.05 else "",
                    "dateRecorded": start.date().isoformat(),
                }
            )
    lessons = []
    for i in range(1, rng.randint(50, 200) + 1):
        s, t, r = rng.choice(students), rng.choice(teachers), rng.choice(rooms)
        lessons.append(
            {
                "id": f"lesson-{i}",
                "studentId": s["id"],
                "studentName": s["name"],
                "teacherId": t["id"],
                "teacherName": t["name"],
                "subject": t["subject"],
                "date": (start + timedelta(days=i)).date().isoformat(),
                "startTime": "16:00",
                "endTime": "17:00",
                "classroomId": r["id"],
                "classroomName": r["name"],
                "status": rng.choice(["scheduled", "completed", "cancelled"]),
                "paymentObligation": {
                    "id": f"plo-{i}",
                    "amount": 600,
                    "dueDate": start.date().isoformat(),
                    "status": "pending",
                    "createdAt": _iso(start),
                },
                "paymentRecords": [
                    {
                        "id": f"plp-{i}-1",
                        "amount": 300,
                        "paymentDate": start.date().isoformat(),
                        "method": "cash",
                        "createdAt": _iso(start),
                    }
                ],
                "createdAt": _iso(start),
                "updatedAt": _iso(start),
            }
        )

    dump = {
        "students": json.dumps(students, ensure_ascii=False),
        "teachers": json.dumps(teachers, ensure_ascii=False),
        "classrooms": json.dumps(rooms, ensure_ascii=False),
        "classes": json.dumps(classes, ensure_ascii=False),
        "paymentObligations": json.dumps(obligations, ensure_ascii=False),
        "payments": json.dumps(payments, ensure_ascii=False),
        "attendance-records": json.dumps(attendance, ensure_ascii=False),
        "assessments": json.dumps(assessments, ensure_ascii=False),
        "grades": json.dumps(grades, ensure_ascii=False),
        "privateLessons": json.dumps(lessons, ensure_ascii=False),
        "mockDataMetadata": json.dumps({"lastUpdated": _iso(start + timedelta(days=120)), "version": "1.0.0"}),
        "theme": "dark",
        "sidebarCollapsed": "false",
    }
    return dump


def write_demo(out: Path, *, schools: int = 3, seed: int = 7) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(1, schools + 1):
        dump = school_dump(index, seed)
        if index == schools and schools > 1:
            dump["privateLessons"] = dump["privateLessons"][: len(dump["privateLessons"]) // 2]  # a write cut short
        path = out / f"school-{index}.json"
        path.write_text(json.dumps(dump, ensure_ascii=False), encoding="utf-8")
        paths.append(path)
    return paths
