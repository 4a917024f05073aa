"""The shipped alerting rules parse, say how severe they are, and only use metrics the
services export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import generate_latest

from shared.platform.telemetry import setup_telemetry

RULES = Path(__file__).parents[2] / "deploy" / "prometheus" / "alerts.yml"


def test_every_rule_has_a_severity_and_uses_exported_metrics() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["labels"]["severity"] for r in rules} == {"critical", "warning"}
    names = {r["alert"] for r in rules}
    assert {
        "SchoolmigDataLossDetected",
        "SchoolmigServiceDown",
        "SchoolmigHighErrorRate",
        "SchoolmigSlowMigration",
        "SchoolmigForgedMessages",
        "SchoolmigDeadLetters",
    } <= names

    metrics = setup_telemetry("rules-test")
    metrics.errors.add(0, {"category": "transient"})
    metrics.messages_refused.add(0, {"reason": "unsigned", "topic": "t"})
    metrics.dead_letters.add(0, {"service": "ingest", "reason": "invalid_json"})
    metrics.records_loaded.add(0, {"school_id": "s", "domain": "students"})
    metrics.records_quarantined.add(0, {"school_id": "s", "domain": "students"})
    metrics.schools.progress["s"] = 0.5
    metrics.schools.lag[("g", "t")] = 0
    exported = {
        line.split("{")[0].split(" ")[0] for line in generate_latest().decode().splitlines() if line and not line.startswith("#")
    }
    for rule in rules:
        for name in re.findall(r"\b(schoolmig_[a-z_]+)", rule["expr"]):
            assert name in exported, (rule["alert"], name)
