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

from schoolmig.letters import LetterFilter, LetterReader
from shared.ledger.schools import command_outcome
from shared.platform.db import create_pool
from shared.platform.settings import Settings
from shared.platform.topics import Topics
from shared.wire.messages import OperatorCommand


@dataclass(frozen=True)
class Decision:
    command: OperatorCommand
    outcome: str | None
    """The coordinator's words; None when no answer came in time."""
    source: Literal["coordinator", "dead_letter", "none"]

    @property
    def refused(self) -> bool:
        return self.source == "dead_letter" or (self.outcome or "").startswith("refused")

    @property
    def answered(self) -> bool:
        return self.outcome is not None

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
    from schoolmig.runner import send_command

    assert settings.kafka_bootstrap_servers and settings.database_url  # schoolmig.endpoints.located
    reader = await LetterReader(settings.kafka_bootstrap_servers, Topics.from_settings(settings).deadletter).start(from_end=True)
    pool = await create_pool(settings.database_url)
    try:
        await send_command(settings.kafka_bootstrap_servers, settings, command)
        mine = LetterFilter(correlation_id=command.command_id)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if (outcome := await command_outcome(pool, command.command_id)) is not None:
                return Decision(command, outcome, "coordinator")
            for letter in await reader.batch(0.25):
                if mine(letter):
                    d = letter.letter
                    return Decision(command, f"refused unread ({d.reason}): {d.message}", "dead_letter")
            await asyncio.sleep(0)
        return Decision(command, None, "none")
    finally:
        await pool.close()
        await reader.stop()
