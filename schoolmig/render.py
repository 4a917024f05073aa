"""Showing a run report to a person: one table per school, then the quarantine reasons."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from schoolmig.output import data_console, iso
from shared.catalog.domains import ALL_DOMAINS


def print_report(report: dict[str, Any], console: Console | None = None) -> None:
    console = console or data_console()
    for school in report["schools"]:
        title = f"{school['school_id']} · snapshot {school['snapshot_id']} · phase {school['phase']}"
        table = Table(title=title, title_justify="left")
        for column in ("domain", "source", "loaded", "quarantined", "accounted", "valid", "issues"):
            table.add_column(column, justify="left" if column == "domain" else "right", overflow="fold")
        validated = {d["domain"]: d for d in (school.get("validation") or {}).get("domains", [])}
        for domain in (d.value for d in ALL_DOMAINS):
            c = school["domains"][domain]
            ok = c["source"] == c["loaded"] + c["quarantined"]
            v = validated.get(domain)
            issues = Counter(i["severity"] for i in v["issues"]) if v else Counter()
            table.add_row(
                domain,
                str(c["source"]),
                str(c["loaded"]),
                str(c["quarantined"]),
                "✓" if ok else "✗",
                str(v["valid_records"]) if v else "–",
                " ".join(f"{n} {s}" for s, n in sorted(issues.items())) if v else "–",
            )
        totals = {k: sum(c[k] for c in school["domains"].values()) for k in ("source", "loaded", "quarantined")}
        valid = sum(v["valid_records"] for v in validated.values())
        table.add_row(
            "total",
            *(str(totals[k]) for k in ("source", "loaded", "quarantined")),
            "",
            str(valid) if validated else "–",
            "",
            style="bold",
        )
        console.print(table)
        reasons = Counter((q["domain"], q["reason"]) for q in school["quarantine"])
        for (domain, reason), n in reasons.most_common(8):
            console.print(f"  quarantined: {n:>6} × {domain}: {reason}")
        validation = "passed" if school["validation_ok"] else "FAILED" if school["validation"] else "not run"
        if school.get("superseded"):
            console.print(f"  [bold yellow]superseded[/]: {school['superseded']}")
        if school.get("unchanged"):
            console.print(f"  [bold]unchanged[/]: {school['unchanged']}")
        if disagreed := school.get("device_conflicts"):
            console.print(
                f"  [bold yellow]review[/]: {len(disagreed)} record(s) the school's devices disagree on; the greater "
                "version stands (e.g. "
                + "; ".join(
                    f"{c['domain']}/{c['legacy_id']}: "
                    + ", ".join(f"{d['device'] or '(unnamed)'} {d['holds']} {d['version']}" for d in c["devices"])
                    + f" -> {c['winner'] or '(unnamed)'}"
                    for c in disagreed[:3]
                )
                + ")"
            )
        if school.get("blocked"):
            console.print(f"  [bold red]blocked[/]: {school['blocked']}")
        console.print(f"  validation: {validation}\n")
    console.print("[bold green]OK[/]" if report["ok"] else "[bold red]NOT OK[/]: see the tables above")


def print_audit(school_id: str, audit: dict[str, Any], console: Console | None = None) -> None:
    console = console or data_console()
    summary = audit["summary"]
    table = Table(title=f"audit · {school_id} · snapshot {audit['snapshot_id']}", title_justify="left")
    for column in ("domain", "records", "duplicate ids", "corrupted"):
        table.add_column(column, justify="left" if column == "domain" else "right", overflow="fold")
    for domain in (d.value for d in ALL_DOMAINS):
        table.add_row(
            domain,
            str(summary["source_counts"].get(domain, 0)),
            str(len(summary["duplicate_ids"].get(domain, []))),
            str(summary["corrupted"].get(domain, 0)),
        )
    console.print(table)
    if summary["unknown_keys"]:
        console.print(f"  unknown keys (not migrated): {', '.join(summary['unknown_keys'])}")
    for key, n in (summary.get("unmapped_keys") or {}).items():
        console.print(
            f"  [bold red]records under an unmapped key[/]: {key} ({n} record(s)): the school waits at the audit gate;"
            f" map it (SCHOOLMIG_KEY_ALIASES) or `schoolmig override-audit` to leave them behind"
        )
    for key, domain in (summary.get("aliased_keys") or {}).items():
        console.print(f"  read through an alias: {key} as {domain}")
    if summary.get("timezone"):
        why = {"operator": "set by an operator", "client": "reported by its clients", "default": "SCHOOLMIG_DEFAULT_TIMEZONE"}
        source = summary.get("timezone_source") or ""
        console.print(f"  dates read in the school's time zone: {summary['timezone']} ({why.get(source, source)})")
    findings = Table(title="findings", title_justify="left")
    for column in ("type", "severity", "count"):
        findings.add_column(column, overflow="fold")
    severities = {f["type"]: f["severity"] for f in audit["findings"]}
    for kind, n in summary["findings"].items():
        findings.add_row(kind, severities.get(kind, ""), str(n))
    console.print(findings)
    for f in audit["findings"][:20]:
        if "domain" not in f:  # a finding about a key of the file
            where = f"key {f.get('field', '?')}"
        else:
            where = f"{f['domain']}/{f.get('record_id', '?')}" + (f".{f['field']}" if f.get("field") else "")
        target = f" → {f['ref_domain']}/{f.get('ref_id', '?')}" if f.get("ref_domain") else ""
        console.print(f"  {f['type']:<20} {where}{target} {f.get('detail', '')}")
    if len(audit["findings"]) > 20:
        console.print(f"  … and {len(audit['findings']) - 20} more (--json for all)")


def print_backup_checks(checks: list[Any], console: Console | None = None) -> None:
    console = console or data_console()
    table = Table(title="backups", title_justify="left")
    for column in ("school", "snapshot", "stored", "bytes", "database copy", "file copy"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(
            c.school_id,
            c.snapshot_id,
            c.stored_at[:19],
            str(c.size_bytes),
            "✓" if c.database_ok else "✗ MISMATCH",
            ("✓ " if c.file_ok else "✗ ") + (c.file_path or "missing"),
        )
    console.print(table)
    if not checks:
        console.print("no backups found")


def print_validation(result: dict[str, Any], console: Console | None = None, limit: int = 30) -> None:
    """The plan's ``DataValidationResult`` per domain, then the issues (the first ``limit``)."""
    console = console or data_console()
    verdict = "[bold green]passed[/]" if result["ok"] else "[bold red]FAILED[/]"
    title = f"validation {result['run_id']} · {result['school_id']} · snapshot {result['snapshot_id']}"
    table = Table(title=title, title_justify="left")
    for column in ("domain", "total", "valid", "critical", "warning", "info"):
        table.add_column(column, justify="left" if column == "domain" else "right", overflow="fold")
    issues = []
    for domain in result["domains"]:
        severities = Counter(i["severity"] for i in domain["issues"])
        table.add_row(
            domain["domain"],
            str(domain["total_records"]),
            str(domain["valid_records"]),
            *(str(severities.get(s, 0)) for s in ("critical", "warning", "info")),
        )
        issues.extend(domain["issues"])
    console.print(table)
    order = {"critical": 0, "warning": 1, "info": 2}
    for i in sorted(issues, key=lambda i: order[i["severity"]])[:limit]:
        where = f"{i['domain']}/{i['record_id']}" if i.get("record_id") else i["domain"]
        console.print(f"  {i['severity']:<8} {i['type']:<18} {where}: {i['message']}")
        for f in i.get("fields", [])[:5]:
            console.print(f"{'':>12}{f['field']}: {_short(f.get('source'))} → {_short(f.get('database'))}")
    if len(issues) > limit:
        console.print(f"  … and {len(issues) - limit} more (--json for all)")
    console.print(f"  validation: {verdict}")


def print_validation_summary(results: list[dict[str, Any]], console: Console | None = None) -> None:
    console = console or data_console()
    table = Table(title=f"validation · {len(results)} school(s)", title_justify="left")
    for column in ("school", "snapshot", "total", "valid", "critical", "warning", "info", "verdict"):
        table.add_column(column, justify="left" if column in ("school", "snapshot", "verdict") else "right", overflow="fold")
    for r in sorted(results, key=lambda r: r["school_id"]):
        severities = Counter(i["severity"] for d in r["domains"] for i in d["issues"])
        table.add_row(
            r["school_id"],
            r["snapshot_id"],
            str(sum(d["total_records"] for d in r["domains"])),
            str(sum(d["valid_records"] for d in r["domains"])),
            *(str(severities.get(s, 0)) for s in ("critical", "warning", "info")),
            "passed" if r["ok"] else "FAILED",
        )
    console.print(table)


def print_status(schools: list[dict[str, Any]], console: Console | None = None) -> None:
    """One row per school, ids whole (folded, never cut), with why it waits and what moves it."""
    console = console or data_console()
    table = Table(title=f"{len(schools)} school(s)", title_justify="left")
    for column in ("school", "phase", "mode", "snapshot", "accounted", "devices", "conflicts", "since", "waits for", "next"):
        table.add_column(column, overflow="fold")
    for s in schools:
        progress = f"{s['accounted']}/{s['source']}" if s.get("source") else "–"
        devices = s.get("devices") or []
        held = sum(1 for c in s.get("data_conflicts") or [] if not c["accepted_by"])
        conflicts = ", ".join(
            part
            for part in (
                f"{s['device_conflicts']} between devices" if s.get("device_conflicts") else "",
                f"{held} held" if held else "",
            )
            if part
        )
        table.add_row(
            s["school_id"],
            s["phase"],
            s["mode"] + (" (maintenance)" if s["maintenance"] else ""),
            s["snapshot_id"] or "",
            progress,
            ", ".join(d or "(unnamed)" for d in devices) if devices else "–",
            conflicts,
            iso(s["updated_at"]),
            s.get("waits_for") or "",
            s.get("next") or "",
        )
    console.print(table)


def _short(value: Any, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"
