"""``schoolmig report``: the plan's progress report for stakeholders (daily during the
migration, a final one after), as markdown, from ``shared.ledger.overview``. Pure."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from schoolmig.output import iso


def _md(value: Any, limit: int = 200) -> str:
    """Text as markdown shows it, never as markup: a key name or an outcome can come from a
    client or an operator (no links, images or HTML through them)."""
    text = str(value).replace("\n", " ")
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~])", r"\\\1", text)


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def markdown(figures: dict[str, Any], now: datetime) -> str:
    o = figures["overview"]
    since = figures.get("since")
    lines = [f"# School data migration: progress at {iso(now)}", ""]
    if since:
        lines += [f"Covering {iso(since)} to {iso(now)}.", ""]
    schools = figures["schools"]
    done = sum(1 for s in schools if s["phase"] == "completed")
    lines += [
        "## Overview",
        "",
        *_table(
            ["schools", "on the API", "records", "migrated", "quarantined", "progress"],
            [
                [
                    len(schools),
                    done,
                    f"{o['total_records']:,}",
                    f"{o['migrated_records']:,}",
                    f"{o['failed_records']:,}",
                    f"{o['migration_progress']}%",
                ]
            ],
        ),
        "",
        "## Schools by phase",
        "",
        *_table(["phase", "schools"], [[p, n] for p, n in figures["phases"].items()] or [["–", 0]]),
        "",
    ]
    if since:
        moves = figures["moves"]
        lines += [f"## Moves since {iso(since)}", ""]
        lines += [
            f"- {iso(m['at'])} {_md(m['school_id'])}: {m['from_phase'] or '–'} → {m['to_phase']} ({_md(m['actor'])})"
            for m in moves
        ]
        lines += ["- none"] if not moves else []
        lines += [""]
    waiting = [s for s in schools if s["next"] and s["phase"] not in ("completed",)]
    lines += ["## Waiting for an operator", ""]
    lines += [f"- {_md(s['school_id'])} ({s['phase']}): {_md(s['waits_for'])} — {_md(s['next'])}" for s in waiting] or ["- none"]
    lines += ["", "## By domain", ""]
    lines += _table(
        ["domain", "records", "migrated", "quarantined", "in flight"],
        [[d, c["total"], c["migrated"], c["failed"], c["in_flight"]] for d, c in figures["by_domain"].items()],
    )
    lines += ["", "## Errors by category", ""]
    lines += _table(["category", "count"], [[k.replace("_", " "), n] for k, n in figures["error_summary"].items()])
    lines += ["", "## Quarantine by reason", ""]
    lines += _table(["reason", "records"], [[k, n] for k, n in figures["quarantine_by_reason"].items()] or [["–", 0]])
    cleared = [s for s in schools if (s.get("local_copies") or {}).get("told_to_clear")]
    if cleared:
        lines += ["", "## Local copies (after the grace period)", ""]
        lines += _table(
            ["school", "cleared on", "still held on"],
            [
                [
                    s["school_id"],
                    ", ".join(d or "(unnamed)" for d in s["local_copies"]["cleared"]) or "–",
                    ", ".join(d or "(unnamed)" for d in s["local_copies"]["holding"]) or "–",
                ]
                for s in cleared
            ],
        )
    refused = [c for c in figures["recent_commands"] if c["refused"]]
    if refused:
        lines += ["", "## Refused operator commands", ""]
        lines += [
            f"- {iso(c['at'])} {_md(c['school_id'])}: {c['action']} by {_md(c['actor'])}: {_md(c['outcome'])}" for c in refused
        ]
    return "\n".join(lines) + "\n"
