"""`schoolmig run` on embedded defaults exactly as `make run` uses it. (A crashed service
restarted by `up`, and a clean stop of every service, are part of ``test_first_hour``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STUDENT = {
    "id": "student-1",
    "name": "Ана",
    "email": "a@x",
    "status": "active",
    "joinDate": "2024-01-01",
    "dateOfBirth": "2010-01-01",
}


def test_schoolmig_run_on_embedded_defaults(tmp_path: Path) -> None:
    """No KAFKA_BOOTSTRAP_SERVERS, no DATABASE_URL: the command starts and stops its own."""
    from schoolmig.demo import school_dump

    dump = school_dump(1, seed=3)
    dump["grades"] = dump["grades"][:-10]  # a value cut short mid-write
    data = tmp_path / "greenfield.json"
    data.write_text(json.dumps(dump, ensure_ascii=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL")}
    env["SCHOOLMIG_STATE_DIR"] = str(tmp_path / "state")
    env["SCHOOLMIG_RUN_STALL_TIMEOUT_S"] = "120"
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "schoolmig.cli",
            "run",
            str(data),
            "--report",
            str(tmp_path / "report.json"),
            "--override-audit",
            "the grades value was cut short in the browser",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    [school] = report["schools"]
    assert report["ok"] and school["school_id"] == "greenfield" and school["phase"] == "validated"
    assert school["domains"]["grades"] == {"source": 1, "loaded": 0, "quarantined": 1}
    assert school["domains"]["students"]["loaded"] > 40
    total_source = sum(d["source"] for d in school["domains"].values())
    assert total_source == sum(d["loaded"] + d["quarantined"] for d in school["domains"].values()) > 1000
    assert len(school["quarantine"]) == sum(d["quarantined"] for d in school["domains"].values())
    validated = {d["domain"]: d for d in school["validation"]["domains"]}  # the validator's verdict, per domain
    assert set(validated) == set(school["domains"])
    for name, counts in school["domains"].items():
        assert validated[name]["total_records"] == counts["source"]
        assert validated[name]["valid_records"] == counts["loaded"], name
    assert not [i for d in validated.values() for i in d["issues"] if i["severity"] == "critical"]
    assert "greenfield" in done.stdout and "OK" in done.stdout
    assert time.monotonic() - started < 200
