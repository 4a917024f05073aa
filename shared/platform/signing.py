"""Who sent an internal message: HMAC signatures over every message the pipeline publishes.

Kafka's ACLs decide who may write a topic; this decides whether a message on it is acted on.
Anyone who can produce to the broker could otherwise cut a school over with one JSON
message, inject a barrier or forge a validation result. So every message a service or the
CLI publishes carries a ``schoolmig-auth`` header: ``v1;<principal>;<hex HMAC-SHA256>`` over
the principal, the topic and the exact body bytes (moving a signed message to another topic
breaks it). A consumer of an internal topic acts only on a message whose signature checks
out with the key it holds for that principal, and whose principal may send to that topic;
anything else is dead-lettered (``unsigned``, ``unknown_principal``, ``bad_signature``,
``not_allowed``), counted and alerted on.

Principals and keys (secrets: only from the environment, never logged or written):

- ``service``: the five services share ``SCHOOLMIG_SERVICE_KEY``; barriers, events, batches,
  validation and mode messages are theirs.
- ``operator:<name>``: each operator has a key; the coordinator holds them all
  (``SCHOOLMIG_OPERATOR_KEYS="alice=…,bob=…"``), the CLI its own (``SCHOOLMIG_OPERATOR`` and
  ``SCHOOLMIG_OPERATOR_KEY``). A command's actor is the principal that signed it, whatever
  its body says.

Not guaranteed: a holder of the service key can sign as any service (the key is shared,
symmetric); a signed message replayed on its own topic verifies again (commands are
idempotent per school and phase, and the coordinator refuses illegal transitions).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from faststream.kafka import KafkaBroker
from pydantic import BaseModel

from shared.platform.settings import Settings

HEADER = "schoolmig-auth"
_HEX_MAC = re.compile(r"[0-9a-f]{64}")
SERVICE = "service"
OPERATOR_PREFIX = "operator:"


class MissingKey(RuntimeError):
    """A process that must sign or verify has no key in its environment."""


@dataclass(frozen=True)
class Refused:
    """Why a message is not acted on (no values: the message is hostile)."""

    reason: str
    detail: str


def _mac(key: bytes, principal: str, topic: str, body: bytes) -> str:
    return hmac.new(key, b"v1\n%s\n%s\n%s" % (principal.encode(), topic.encode(), body), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Keyring:
    """This process's signing identity and the keys it trusts, by principal."""

    principal: str | None
    own_key: bytes | None = field(repr=False)
    trusted: dict[str, bytes] = field(repr=False)

    @classmethod
    def for_service(cls, settings: Settings) -> Keyring:
        """A service signs as ``service``; it trusts ``service`` and, for the coordinator's
        command topic, the operators' keys it is given. (Made at import, checked at start:
        :meth:`require`.)"""
        key = settings.service_key.get_secret_value().encode() if settings.service_key else None
        return cls(SERVICE, key, {**({SERVICE: key} if key else {}), **operator_keys(settings)})

    def require(self) -> Keyring:
        """Refuse to run without a key: a service that cannot sign or verify must not start."""
        if self.own_key is None:
            raise MissingKey(
                "SCHOOLMIG_SERVICE_KEY is not set: services sign and verify every internal message with it "
                "(`schoolmig up` makes one for its embedded stack)"
            )
        return self

    @classmethod
    def for_operator(cls, settings: Settings) -> Keyring:
        """The CLI signs as ``operator:<name>`` with the operator's own key."""
        if settings.operator_key is None:
            raise MissingKey(
                "SCHOOLMIG_OPERATOR_KEY is not set: the coordinator acts only on commands signed by an operator "
                "it knows (SCHOOLMIG_OPERATOR_KEYS on the coordinator)"
            )
        return cls(f"{OPERATOR_PREFIX}{settings.operator}", settings.operator_key.get_secret_value().encode(), {})

    def sign(self, topic: str, body: bytes) -> dict[str, str]:
        """The header that proves this process sent ``body`` to ``topic``."""
        if self.principal is None or self.own_key is None:
            raise MissingKey("this process has no signing key")
        return {HEADER: f"v1;{self.principal};{_mac(self.own_key, self.principal, topic, body)}"}

    def verify(self, topic: str, body: bytes, headers: Iterable[tuple[str, Any]], *, allowed: tuple[str, ...]) -> str | Refused:
        """The principal that signed ``body`` for ``topic``, if it may send there
        (``allowed``: principals, or prefixes ending in ``:``); else why not."""
        value = next((v for k, v in headers if k == HEADER), None)
        if not value:
            return Refused("unsigned", f"no {HEADER} header")
        text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
        parts = text.split(";")
        if len(parts) != 3 or parts[0] != "v1":
            return Refused("bad_signature", f"the {HEADER} header is not v1;<principal>;<mac>")
        _, principal, mac = parts
        key = self.trusted.get(principal)
        if key is None:
            return Refused("unknown_principal", "signed by a principal this service has no key for")
        if not _HEX_MAC.fullmatch(mac) or not hmac.compare_digest(mac.encode(), _mac(key, principal, topic, body).encode()):
            return Refused("bad_signature", f"the signature of {principal[:80]} does not match the message")
        if not any(principal == a or (a.endswith(":") and principal.startswith(a)) for a in allowed):
            return Refused("not_allowed", f"{principal[:80]} may not send to {topic}")
        return principal


def operator_keys(settings: Settings) -> dict[str, bytes]:
    """``SCHOOLMIG_OPERATOR_KEYS`` (``name=key,…``) by principal."""
    if settings.operator_keys is None:
        return {}
    keys = {}
    for item in settings.operator_keys.get_secret_value().split(","):
        name, sep, key = item.strip().partition("=")
        if sep and name and key:
            keys[f"{OPERATOR_PREFIX}{name}"] = key.encode()
    return keys


def body_of(message: BaseModel | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.model_dump_json().encode()


async def publish(
    broker: KafkaBroker,
    keyring: Keyring,
    message: BaseModel | bytes,
    topic: str,
    *,
    key: bytes | None = None,
    partition: int | None = None,
    headers: dict[str, str] | None = None,
    no_confirm: bool = False,
    correlation_id: str | None = None,
) -> Any:
    """Publish ``message`` signed: the one way schoolmig's processes write to Kafka
    (``correlation_id``: an answer's, the one of the message it answers)."""
    body = body_of(message)
    signed = {"content-type": "application/json", **(headers or {}), **keyring.sign(topic, body)}
    return await broker.publish(
        body, topic, key=key, partition=partition, headers=signed, no_confirm=no_confirm, correlation_id=correlation_id
    )


def stale_age(issued_at: datetime, ttl_s: float, ahead_s: float) -> float | None:
    """How long ago a signed request was issued, when that makes it not to be acted on: older
    than ``ttl_s`` (a captured request kept for later), or more than ``ahead_s`` ahead of this
    clock. None when it is fresh."""
    age = (datetime.now(UTC) - issued_at).total_seconds()
    return age if age > ttl_s or -age > ahead_s else None
