"""The command line as an operator meets it: every command described with an example that
parses, every command `status` suggests parses too, secrets made once with their modes, one
rule to find the stack, dead letters shown without payloads, times in ISO 8601."""

from __future__ import annotations

import json
import os
import shlex
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schoolmig.cli import EXAMPLES, build_parser
from schoolmig.decisions import Decision
from schoolmig.endpoints import NoStack, located
from schoolmig.keys import init_secrets
from schoolmig.letters import Letter, LetterFilter
from schoolmig.output import iso, to_json
from schoolmig.stack import StackInfo
from shared.ledger.guidance import next_step
from shared.platform.settings import STATE_SECRETS, Settings
from shared.wire.messages import DeadLetter, OperatorCommand

PLACEHOLDERS = {"FILE": "school.json", "KEY=DOMAIN": "attendanceRecords=attendance", '"…"': "because"}


def parses(command_line: str) -> None:
    """``command_line`` (``schoolmig …``, placeholders filled) is accepted by the parser."""
    for placeholder, value in PLACEHOLDERS.items():
        command_line = command_line.replace(placeholder, value)
    words = shlex.split(command_line)
    assert words[0] == "schoolmig", command_line
    build_parser().parse_args(words[1:])


def test_every_command_has_a_description_and_an_example_that_parses() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == set(EXAMPLES)
    for name, sub in commands.items():
        assert sub.description and sub.epilog and name in sub.epilog
        for part in EXAMPLES[name].split("#")[0].split(" > ")[0].split("&&"):
            parses(part.strip())
        assert all(a.help for a in sub._actions if a.dest == "school"), name


PHASES = [None, "registered", "audited", "backed_up", "dual_write", "synced", "validated", "cutover", "completed"]
SCHOOL_IDS = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True)


@st.composite
def status_rows(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "school_id": draw(SCHOOL_IDS),
        "phase": draw(st.sampled_from([*PHASES, "rolled_back"])),
        "accounted": draw(st.integers(0, 10)),
        "source": draw(st.integers(0, 10)),
        "blocked": draw(
            st.none()
            | st.fixed_dictionaries(
                {"critical": st.integers(1, 5), "unmapped_keys": st.lists(st.sampled_from(["attRecs", "x-y"]), max_size=2)}
            )
        ),
        "data_conflicts": draw(
            st.lists(
                st.fixed_dictionaries(
                    {"record": st.sampled_from(["students/s-1", "teachers/t-2"]), "accepted_by": st.none() | st.just("ops")}
                ),
                max_size=3,
            )
        ),
        "validation_ok": draw(st.none() | st.booleans()),
    }


@given(status_rows())
def test_status_says_why_every_school_waits_and_each_command_it_suggests_parses(school: dict[str, Any]) -> None:
    step = next_step(school)
    assert step.waits_for
    if step.command is None:
        return
    assert school["school_id"] in step.command or school["phase"] in (None, "rolled_back")
    for part in step.command.removeprefix("to go back: ").split("; then "):
        parses(part.split(" (")[0])


def test_a_school_at_the_audit_gate_is_pointed_at_the_override_or_the_key_mapping() -> None:
    held = {"school_id": "s1", "phase": "registered", "blocked": {"critical": 2, "unmapped_keys": []}}
    assert "override-audit --school s1" in (next_step(held).command or "")
    unmapped = held | {"blocked": {"critical": 1, "unmapped_keys": ["attRecs"]}}
    assert (next_step(unmapped).command or "").startswith("schoolmig map-key")
    assert next_step({"school_id": "s1", "phase": "validated"}).command == "schoolmig cutover --school s1"
    cleared = {"told_to_clear": True, "cleared": ["pc"], "holding": ["", "tablet"]}
    waits = next_step({"school_id": "s1", "phase": "completed", "local_copies": cleared}).waits_for
    assert "cleared on 1 device(s), still held on (unnamed), tablet" in waits


def test_init_makes_each_secret_once_owner_only_and_settings_read_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    first = init_secrets(state)
    assert [m.name for m in first] == list(STATE_SECRETS) and all(m.created for m in first)
    assert stat.S_IMODE((state / "secrets").stat().st_mode) == 0o700
    values = {m.name: m.path.read_text().strip() for m in first}
    for made in first:
        assert stat.S_IMODE(made.path.stat().st_mode) == 0o600
    again = init_secrets(state)
    assert not any(m.created for m in again) and {m.name: m.path.read_text().strip() for m in again} == values

    for name in os.environ:
        if name.startswith("SCHOOLMIG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SCHOOLMIG_STATE_DIR", str(state))
    settings = Settings()
    assert settings.operator_key and settings.operator_key.get_secret_value() == values["operator_key"]
    assert settings.service_key and settings.service_key.get_secret_value() == values["service_key"]
    assert settings.api_token == values["api_token"]
    assert values["operator_key"] not in repr(settings)
    monkeypatch.setenv("SCHOOLMIG_OPERATOR_KEY", "from-the-environment")  # the environment wins
    assert Settings().operator_key.get_secret_value() == "from-the-environment"  # type: ignore[union-attr]


def test_every_command_finds_the_stack_by_one_rule(tmp_path: Path) -> None:
    bare = Settings().model_copy(update={"state_dir": tmp_path, "kafka_bootstrap_servers": None, "database_url": None})
    with pytest.raises(NoStack, match="KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL"):
        located(bare)
    StackInfo("127.0.0.1:1", "postgresql://u@127.0.0.1:2/p", os.getpid()).save(tmp_path)
    found = located(bare)
    assert (found.kafka_bootstrap_servers, found.database_url) == ("127.0.0.1:1", "postgresql://u@127.0.0.1:2/p")
    mine = located(bare.model_copy(update={"database_url": "postgresql://u:pw@db/p"}))
    assert (mine.kafka_bootstrap_servers, mine.database_url) == ("127.0.0.1:1", "postgresql://u:pw@db/p")
    StackInfo("127.0.0.1:1", "x", 2**22 + 12345).save(tmp_path)  # a stack file whose process is gone
    with pytest.raises(NoStack):
        located(bare)


LETTERS = st.builds(
    DeadLetter,
    reason=st.sampled_from(["invalid_envelope", "unknown_signer"]),
    message=st.text(max_size=20),
    topic=st.just("p.ingest"),
    partition=st.integers(0, 3),
    offset=st.integers(0, 100),
    payload_b64=st.binary(max_size=50).map(lambda b: __import__("base64").b64encode(b).decode()),
    school_id=st.none() | st.sampled_from(["a", "b"]),
    correlation_id=st.none() | st.sampled_from(["c1", "c2"]),
)


@given(LETTERS, st.datetimes(timezones=st.just(UTC)), st.sampled_from([None, "a"]), st.sampled_from([None, "unknown_signer"]))
def test_a_dead_letter_is_shown_without_its_payload_and_filtered_by_each_field(
    letter: DeadLetter, at: datetime, school: str | None, reason: str | None
) -> None:
    shown = Letter(at, letter)
    out = shown.as_json()
    assert "payload_b64" not in out and out["payload_bytes"] == len(__import__("base64").b64decode(letter.payload_b64))
    assert letter.payload_b64 not in shown.line() or not letter.payload_b64
    keep = LetterFilter(school, reason, since=at - timedelta(seconds=1))
    assert keep(shown) == ((school is None or letter.school_id == school) and (reason is None or letter.reason == reason))
    assert not LetterFilter(since=at + timedelta(seconds=1))(shown)


def test_a_decision_is_a_refusal_when_the_coordinator_refused_or_would_not_read_it() -> None:
    command = OperatorCommand(action="rollback", school_id="s1", actor="a", reason="r")
    assert Decision(command, "refused: no export", "coordinator").refused
    assert Decision(command, "refused unread (unknown_signer): …", "dead_letter").refused
    ok = Decision(command, "rolled back from validated", "coordinator")
    assert not ok.refused and ok.answered and ok.taken and ok.as_json()["command_id"] == command.command_id
    silent = Decision(command, None, "none")
    assert not silent.answered and not silent.refused and not silent.taken and "no answer" in silent.line()


@given(st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=8))])))
def test_every_time_printed_is_iso_8601_in_utc(moment: datetime) -> None:
    text = iso(moment)
    assert text.endswith("Z") and datetime.fromisoformat(text.replace("Z", "+00:00")) == moment.replace(microsecond=0)
    assert json.loads(to_json({"at": moment})) == {"at": text}
