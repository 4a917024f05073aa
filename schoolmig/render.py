"""Showing a run report to a person: one table per school, then the quarantine reasons."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.domains import ALL_DOMAINS


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    for school in report["schools"]:
        title = f"{school['school_id']} · snapshot {school['snapshot_id'][:12]} · phase {school['phase']}"
        table = Table(title=title, title_justify="left")
        for column in ("domain", "source", "loaded", "quarantined", "accounted"):
            table.add_column(column, justify="left" if column == "domain" else "right")
        for domain in (d.value for d in ALL_DOMAINS):
            c = school["domains"][domain]
            ok = c["source"] == c["loaded"] + c["quarantined"]
            table.add_row(domain, str(c["source"]), str(c["loaded"]), str(c["quarantined"]), "✓" if ok else "✗")
        totals = {k: sum(c[k] for c in school["domains"].values()) for k in ("source", "loaded", "quarantined")}
        table.add_row("total", *(str(totals[k]) for k in ("source", "loaded", "quarantined")), "", style="bold")
        console.print(table)
        reasons = Counter((q["domain"], q["reason"]) for q in school["quarantine"])
        for (domain, reason), n in reasons.most_common(8):
            console.print(f"  quarantined: {n:>6} × {domain}: {reason}")
        validation = "passed" if school["validation_ok"] else "FAILED" if school["validation"] else "not run"
        console.print(f"  validation: {validation}\n")
    console.print("[bold green]OK[/]" if report["ok"] else "[bold red]NOT OK[/]: see the tables above")
