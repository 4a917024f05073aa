"""Why a school waits, and the command that moves it on: what ``schoolmig status`` shows
beside each school. Pure: it reads what status gathered, nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class NextStep:
    waits_for: str
    command: str | None = None
    """What an operator runs to move it on; None when a service is doing it."""


def next_step(school: dict[str, Any]) -> NextStep:
    """``school``: a row of ``schoolmig status`` (phase, progress, audit block, held conflicts,
    last validation)."""
    sid, phase = school["school_id"], school.get("phase")
    q = f"--school {sid}"
    if phase in (None, "rolled_back"):
        what = "a snapshot from its clients" if phase is None else "a new snapshot (its clients are on localStorage again)"
        return NextStep(what, f"schoolmig publish FILE {q} (or its HybridClient publishes one)")
    if phase == "registered":
        blocked = school.get("blocked")
        if not blocked:
            return NextStep("its audit (ingest and the coordinator)")
        findings = f"an operator: {blocked['critical']} critical audit finding(s) hold it at the audit gate"
        if blocked.get("unmapped_keys"):  # names a client chose: shown short, and only the first few
            unmapped = blocked["unmapped_keys"]
            keys = ", ".join(repr(k[:40]) for k in unmapped[:3]) + (f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else "")
            return NextStep(f"{findings} (keys no table maps: {keys})", f'schoolmig map-key KEY=DOMAIN {q} --reason "…"')
        return NextStep(findings, f'schoolmig audit {q}; then schoolmig override-audit {q} --reason "…"')
    if phase == "audited":
        return NextStep("a verified backup of its snapshot", f"schoolmig backup verify {q}")
    if phase in ("backed_up", "dual_write"):
        done, total = school.get("accounted", 0), school.get("source", 0)
        return NextStep(f"its records to be loaded ({done}/{total}); a stalled school is re-driven by itself")
    if phase == "synced":
        held = [c for c in school.get("data_conflicts") or [] if not c.get("accepted_by")]
        if held:
            first = held[0]["record"]
            return NextStep(
                f"an operator: {len(held)} write(s) held for a conflict of the data (status --json lists them)",
                f'schoolmig accept-conflict {first} {q} --reason "…" (or fix the data, then schoolmig replay {q})',
            )
        if school.get("validation_ok") is False:
            return NextStep("a passing validation: the last one found critical issues", f"schoolmig validate {q}")
        return NextStep("its validation (the validator)")
    if phase == "validated":
        return NextStep("an operator's cutover", f"schoolmig cutover {q}")
    if phase == "cutover":
        return NextStep("its cutover to end (it rolls back by itself if a step fails)", f"schoolmig history {q}")
    if phase == "completed":
        copies = school.get("local_copies") or {}
        what = "nothing: it runs on the API"
        if copies.get("told_to_clear"):  # the plan's last step: which devices still hold the school's data
            holding = copies.get("holding") or []
            what += f"; local copies cleared on {len(copies.get('cleared') or [])} device(s)" + (
                f", still held on {', '.join(d or '(unnamed)' for d in holding)}" if holding else ", none holds one"
            )
        return NextStep(what, f"to go back: schoolmig export {q} --verify; then schoolmig rollback {q}")
    return NextStep(f"nothing known ({phase})")
