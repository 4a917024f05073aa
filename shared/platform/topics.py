"""Every Kafka topic name, in one place.

The ingest topic is the public door (clients publish to it); the rest are internal.
Per-domain topics keep domains independent so each scales and replays on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.catalog.domains import ALL_DOMAINS, Domain
from shared.platform.settings import Settings


def record_key(school_id: str, domain: Domain, legacy_id: str | None, index: int) -> bytes:
    """The Kafka key of every message about one source record: same key, same partition,
    so all of a record's messages stay in order."""
    return f"{school_id}/{domain.value}/{legacy_id if legacy_id is not None else f'#{index}'}".encode()


def batch_key(school_id: str, domain: Domain) -> bytes:
    """The Kafka key of every batch of one school's domain: one partition per topic, so a
    school's records of a domain (and the barriers behind them) stay in order."""
    return f"{school_id}/{domain.value}".encode()


@dataclass(frozen=True)
class Topics:
    prefix: str
    ingest: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        return cls(prefix=settings.topic_prefix, ingest=settings.resolved_ingest_topic)

    def raw(self, domain: Domain) -> str:
        """Batches of source records, as read from the browser."""
        return f"{self.prefix}.raw.{domain.value}"

    def rows(self, domain: Domain) -> str:
        """Batches of source records, each mapped to its target rows."""
        return f"{self.prefix}.rows.{domain.value}"

    @property
    def quarantine(self) -> str:
        """Records that could not be migrated, with a reason; the loader stores them."""
        return f"{self.prefix}.quarantine"

    @property
    def deadletter(self) -> str:
        """Ingest messages that are not a valid envelope; kept with a reason."""
        return f"{self.prefix}.deadletter"

    @property
    def events(self) -> str:
        """Lifecycle events (snapshot released, validation completed, report), keyed by school."""
        return f"{self.prefix}.events"

    @property
    def validate_commands(self) -> str:
        return f"{self.prefix}.commands.validate"

    @property
    def operator_commands(self) -> str:
        """Cutover and rollback requests, keyed by school."""
        return f"{self.prefix}.commands.operator"

    @property
    def control(self) -> str:
        """Compacted, keyed by school: each school's current mode and maintenance flag."""
        return f"{self.prefix}.control.modes"

    @property
    def outcomes(self) -> str:
        """What clients may read back, keyed by school: every snapshot's report, every change's
        outcome, every message of theirs that was refused. Written uncompressed or gzip (any
        stock client reads it: ``SCHOOLMIG_CLIENT_COMPRESSION``)."""
        return f"{self.prefix}.outcomes"

    @property
    def raw_topics(self) -> list[str]:
        return [self.raw(d) for d in ALL_DOMAINS]

    @property
    def rows_topics(self) -> list[str]:
        return [self.rows(d) for d in ALL_DOMAINS]

    def all(self) -> list[str]:
        return [
            self.ingest,
            *self.raw_topics,
            *self.rows_topics,
            self.quarantine,
            self.deadletter,
            self.events,
            self.validate_commands,
            self.operator_commands,
            self.control,
            self.outcomes,
        ]
