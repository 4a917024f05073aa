"""Asking the coordinator for something and waiting for its decision, not for a phase.

A command is signed and sent with its id as correlation id. Its answer is one of:

- what the coordinator made of it, stored with the command (``migration.operator_commands``,
  an outcome that starts with ``refused:`` when it did not act);
- a dead letter that carries the command's id: the coordinator would not read it (a signer
  it does not know, a bad signature, a stale or replayed command), with the reason;
- nothing within the wait: the stack is down, or the coordinator behind (said so).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from schoolmig.letters import LetterReader
from shared.ledger.schools import REFUSED, command_outcome, is_refusal
from shared.platform.db import create_pool
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire.messages import DeadLetter, OperatorCommand


@dataclass(frozen=True)
class Decision:
    command: OperatorCommand
    outcome: str | None
    """The coordinator's words; None when no answer came in time."""
    source: Literal["coordinator", "dead_letter", "none"]

    @property
    def refused(self) -> bool:
        return self.source == "dead_letter" or is_refusal(self.outcome)

    @property
    def answered(self) -> bool:
        return self.outcome is not None

    @property
    def taken(self) -> bool:
        """The coordinator answered and acted on it."""
        return self.answered and not self.refused

    def as_json(self) -> dict[str, Any]:
        c = self.command
        return {
            "command_id": c.command_id,
            "action": c.action,
            "school_id": c.school_id,
            "answered": self.answered,
            "refused": self.refused,
            "outcome": self.outcome,
            "answered_by": self.source,
        }

    def line(self) -> str:
        if self.outcome is None:
            return f"{self.command.school_id}: no answer to {self.command.action} yet (is the stack up? `schoolmig status`)"
        return f"{self.command.school_id}: {self.outcome}"


async def ask(settings: Settings, command: OperatorCommand, wait_s: float = 30.0) -> Decision:
    """Send ``command`` (signed) and wait up to ``wait_s`` for its decision."""
    [decision] = await ask_all(settings, [command], wait_s)
    return decision


async def ask_all(settings: Settings, commands: list[OperatorCommand], wait_s: float = 30.0) -> list[Decision]:
    """Send ``commands`` (signed) and wait up to ``wait_s`` (after the last answer) for each
    one's decision; in their order. A dead letter counts only when the coordinator wrote it
    about a message of the command topic that carried the command's id."""
    from schoolmig.runner import send_command

    assert settings.kafka_bootstrap_servers and settings.database_url  # schoolmig.endpoints.located
    topics = Topics.from_settings(settings)
    reader = await LetterReader(settings.kafka_bootstrap_servers, topics.deadletter).start(from_end=True)
    pool = await create_pool(settings.database_url)
    found: dict[str, Decision] = {}
    try:
        await send_command(settings.kafka_bootstrap_servers, settings, *commands)
        by_id = {c.command_id: c for c in commands}
        deadline = time.monotonic() + wait_s
        while len(found) < len(commands) and time.monotonic() < deadline:
            for command_id, command in by_id.items():
                if command_id not in found and (outcome := await command_outcome(pool, command_id)) is not None:
                    found[command_id] = Decision(command, outcome, "coordinator")
                    deadline = time.monotonic() + wait_s
            for letter in await reader.batch(0.25):
                d = letter.letter
                if d.correlation_id in by_id and d.correlation_id not in found and _about_a_command(d, topics):
                    found[d.correlation_id] = Decision(
                        by_id[d.correlation_id], f"{REFUSED} unread ({d.reason}): {d.message}", "dead_letter"
                    )
            await asyncio.sleep(0)
        return [found.get(c.command_id) or Decision(c, None, "none") for c in commands]
    finally:
        await pool.close()
        await reader.stop()


def _about_a_command(letter: DeadLetter, topics: Topics) -> bool:
    return letter.topic == topics.operator_commands and letter.stage == "coordinator"
