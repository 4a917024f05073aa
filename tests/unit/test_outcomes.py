"""Where a change stands (``shared.ledger.outcomes.standing``) follows from the versions the
ledger holds once the writes are in, whatever order they came in: generated histories of one
record, each write a change or a snapshot, content or deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from shared.ledger.outcomes import Standing, Write, standing
from shared.ledger.versions import Version
from shared.wire.messages import ChangeOp

T0 = datetime(2025, 1, 1, tzinfo=UTC)

writes = st.lists(
    st.tuples(
        st.integers(0, 5),  # seconds after T0
        st.sampled_from(["", "a", "b"]),  # client ("" : a snapshot)
        st.integers(1, 3),  # seq
        st.booleans(),  # a deletion
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda w: (w[0], w[1], w[2] if w[1] else 0),
)


def version(w: tuple[int, str, int, bool]) -> Version:
    return Version(T0 + timedelta(seconds=w[0]), w[1], w[2] if w[1] else 0)


def by(w: tuple[int, str, int, bool]) -> str:
    return f"chg.{w[1]}.{w[2]}" if w[1] else f"snap-{w[0]}"


@given(history=writes, mine=st.integers(0, 5), loaded=st.booleans())
def test_a_change_stands_where_the_greatest_write_of_its_record_puts_it(
    history: list[tuple[int, str, int, bool]], mine: int, loaded: bool
) -> None:
    changes = [w for w in history if w[1] and not (w[1] == "" and w[3])]
    if not changes:
        return
    me = changes[mine % len(changes)]
    written = history if loaded else [w for w in history if w is not me]
    content_changes = [w for w in written if w[1] and not w[3]]
    snapshots = [w for w in written if not w[1] and not w[3]]
    deletions = [w for w in written if w[3]]

    def greatest(ws: list[tuple[int, str, int, bool]]) -> Write | None:
        best = max(ws, key=version, default=None)
        return None if best is None else Write(version(best), by(best))

    op = ChangeOp.DELETE if me[3] else ChangeOp.UPDATE
    found = standing(
        op,
        version(me),
        content=greatest(content_changes),
        deletion=greatest(deletions),
        snapshot=greatest(snapshots),
        waiting_for=[],
        quarantine=None,
    )
    top = max(written, key=version, default=None)
    if top is None or version(top) < version(me):
        assert found.outcome == "pending"
    elif top is me:
        assert found.outcome == "applied" and found.by is None
    elif not me[3] and top[3]:
        assert (found.outcome, found.by) == ("deleted", by(top))
    else:
        assert (found.outcome, found.by) == ("superseded", by(top))


def test_quarantine_and_waiting_come_first() -> None:
    v = Version(T0, "a", 1)
    newer = Write(Version(T0 + timedelta(seconds=1), "b", 1), "chg.b.1")
    assert (
        standing(
            ChangeOp.CREATE, v, content=newer, deletion=None, snapshot=None, waiting_for=[], quarantine=("invalid_enum", "m")
        ).outcome
        == "quarantined"
    )
    held = standing(
        ChangeOp.CREATE,
        v,
        content=None,
        deletion=None,
        snapshot=None,
        waiting_for=["its parent in classes (row x)"],
        quarantine=None,
    )
    assert (held.outcome, held.waiting_for) == ("waiting", ["its parent in classes (row x)"])


def test_a_clients_answer_names_the_field_and_the_rule_never_the_value() -> None:
    from shared.ledger.outcomes import public_message

    assert public_message("'dateOfBirth' is not a calendar date: '1990-02-31'") == "'dateOfBirth' is not a calendar date: …"
    assert (
        public_message("'status' is 'graduated', expected one of ['active', 'inactive']")
        == "'status' is …, expected one of ['active', 'inactive']"
    )


def test_a_write_displaced_from_the_parking_by_a_newer_one_is_superseded_not_pending() -> None:
    mine = Version(T0, "a", 1)
    newer = Write(Version(T0 + timedelta(seconds=1), "a", 2), "chg.a.2")
    older = Write(Version(T0 - timedelta(seconds=1), "a", 0), "chg.a.0")
    assert standing(
        ChangeOp.UPDATE, mine, content=None, deletion=None, snapshot=None, waiting_for=[], quarantine=None, held=newer
    ) == Standing("superseded", by="chg.a.2")
    assert (
        standing(
            ChangeOp.UPDATE, mine, content=None, deletion=None, snapshot=None, waiting_for=[], quarantine=None, held=older
        ).outcome
        == "pending"
    )
