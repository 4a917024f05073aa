"""The progress line of ``schoolmig run``: totals kept right under any updates, and a line
whose size does not grow with the number of schools (its cost is constant)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from schoolmig.progress import RunProgress

PHASES = [None, "registered", "dual_write", "synced", "validated", "failed"]
updates = st.lists(
    st.tuples(
        st.sampled_from([f"school-{i}" for i in range(8)]), st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from(PHASES)
    ),
    max_size=60,
)


@given(updates)
def test_the_totals_are_those_of_each_schools_last_update(seq: list[tuple[str, int, int, str | None]]) -> None:
    shown = RunProgress()
    last: dict[str, tuple[int, int, str | None]] = {}
    for school, done, source, phase in seq:
        shown.update(school, done, source, phase)
        last[school] = (done, source, phase)
    assert (shown.done, shown.source) == (sum(v[0] for v in last.values()), sum(v[1] for v in last.values()))
    expected = Counter(phase or "waiting" for _, _, phase in last.values())
    assert +shown.phases == expected
    line = shown.line()
    assert line.startswith(f"{len(last):,} school(s): ")
    for phase, n in expected.items():
        assert f"{n:,} {phase}" in line


def test_the_line_is_as_long_for_three_thousand_schools_as_for_three() -> None:
    def line_for(schools: int) -> str:
        shown = RunProgress()
        for i in range(schools):
            shown.update(f"school-{i}", 2, 3, "validated" if i % 2 else "dual_write")
        return shown.line()

    small, large = line_for(3), line_for(3000)
    assert "school-" not in large  # a summary, never a list of schools
    assert len(large) <= len(small) + 5 * 4  # only its five figures gain digits (and separators)
    assert large == "3,000 school(s): 1,500 dual_write · 1,500 validated; records 6,000/9,000 (66%)"
