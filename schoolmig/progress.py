"""The progress line ``schoolmig run`` shows while schools migrate.

Constant cost whatever the number of schools: each school's update adjusts running totals
(O(1)), and the line is a summary (records accounted for, schools per phase), never a list
of schools, so drawing it costs the same for 3 schools or 3,000.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

WAITING = "waiting"  # a school the coordinator has not registered yet


@dataclass
class RunProgress:
    """Per school its last (accounted for, source records, phase); totals kept as they change."""

    schools: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    done: int = 0
    source: int = 0
    phases: Counter[str] = field(default_factory=Counter)

    def update(self, school_id: str, done: int, source: int, phase: str | None) -> None:
        before = self.schools.get(school_id)
        if before is not None:
            self.done -= before[0]
            self.source -= before[1]
            self.phases[before[2]] -= 1
        now = (done, source, phase or WAITING)
        self.schools[school_id] = now
        self.done += done
        self.source += source
        self.phases[now[2]] += 1

    def line(self) -> str:
        """``3 school(s): 2 validated · 1 dual_write; records 8,850/8,851 (99%)``: phases by count."""
        share = f" ({100 * self.done // self.source}%)" if self.source else ""
        phases = " · ".join(f"{n:,} {phase}" for phase, n in sorted(self.phases.items(), key=lambda kv: (-kv[1], kv[0])) if n)
        return f"{len(self.schools):,} school(s): {phases or 'none yet'}; records {self.done:,}/{self.source:,}{share}"
