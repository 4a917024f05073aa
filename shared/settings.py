"""One settings model, read from the environment, for every service and the CLI.

Every field is documented in the README's configuration table; keep the two in step.
Secrets (the database password inside ``DATABASE_URL``) come only from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SCHOOLMIG_", extra="ignore")

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means the tooling starts an embedded broker.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="PostgreSQL DSN; unset means the tooling starts an embedded PostgreSQL.",
    )
    topic_prefix: str = Field(default="schoolmig", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    ingest_topic: str | None = Field(
        default=None, description="The public ingest topic; default '<prefix>.ingest'."
    )
    partitions: int = Field(default=3, ge=1, description="Partitions per topic created by the tooling.")
    replication_factor: int = Field(default=1, ge=1)
    batch_records: int = Field(default=500, ge=1, description="Max source records in one batch message on the internal topics.")
    batch_bytes: int = Field(
        default=512 * 1024, ge=1024, description="Max bytes of one batch message before compression (one larger record goes alone)."
    )
    max_record_bytes: int = Field(
        default=400 * 1024, ge=1024, le=512 * 1024,
        description="A source record larger than this (as JSON) is quarantined as record_too_large: it could not travel in one message.",
    )
    max_nesting_depth: int = Field(
        default=32, ge=4, le=150,
        description="A source record nested deeper is quarantined as unrepresentable_value (a real one is 3 deep; "
        "the internal topics' parser stops at 200).",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Tries of a message that fails through its own fault before it goes to the dead letter.",
    )
    batch_size: int = Field(default=8, ge=1, description="Max batch messages a consumer takes at once (the loader: per transaction).")
    batch_timeout_ms: int = Field(default=200, ge=1, description="Max wait to fill a consumer batch.")
    fetch_partition_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Max bytes a batch consumer fetches from one partition at a time (fairness across domains)."
    )
    compression: str = Field(
        default="zstd", pattern="^(none|gzip|snappy|lz4|zstd)$", description="Producer compression on every topic (measured: `make bench`)."
    )
    parent_wait_s: float = Field(
        default=15.0, ge=0, description="Longest a child's batch waits in its partition for parents on their way before it is parked."
    )
    parent_pause_s: float = Field(default=0.3, gt=0, description="How long a partition whose batch waits for parents is paused.")
    metrics_port: int = Field(default=0, ge=0, description="Prometheus scrape port; 0 disables.")
    metrics_host: str = Field(default="127.0.0.1", description="Address the scrape endpoint binds.")
    log_level: str = "INFO"
    state_dir: Path = Field(default=Path(".schoolmig"), description="Embedded servers' data, stack file.")
    backup_dir: Path = Field(default=Path(".schoolmig/backups"), description="Where ingest writes backup files.")
    max_snapshot_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1, description="Ingest refuses a snapshot larger than this (it holds one whole snapshot while releasing it)."
    )
    incomplete_snapshot_timeout_s: float = Field(
        default=300.0, gt=0, description="A snapshot still missing chunks this long after its first part is reported."
    )
    run_stall_timeout_s: float = Field(
        default=120.0, gt=0, description="`schoolmig run` gives up when nothing has moved for this long (never on a slow, healthy run)."
    )
    sync_poll_interval_s: float = Field(default=0.5, gt=0)
    graceful_timeout_s: float = Field(default=15.0, gt=0)
    api_port: int = Field(default=0, ge=0, description="Coordinator HTTP API port (`GET /schools/{id}/mode`); 0 disables.")
    api_host: str = Field(default="127.0.0.1", description="Address the coordinator's HTTP API binds.")
    api_token: str | None = Field(
        default=None, description="Bearer token required by mutating HTTP calls; unset disables them.", repr=False
    )
    service_key: SecretStr | None = Field(
        default=None, description="Secret the services sign and verify every internal message with (`schoolmig up` makes one).",
    )
    operator_keys: SecretStr | None = Field(
        default=None, description="The coordinator's operator keys, `name=key,…`: it acts only on commands they signed.",
    )
    operator: str = Field(
        default_factory=lambda: os.environ.get("USER", "operator") or "operator", pattern=r"^[A-Za-z0-9._@-]{1,64}$",
        description="Who the CLI signs operator commands as (the actor recorded).",
    )
    operator_key: SecretStr | None = Field(default=None, description="The CLI's key for signing operator commands as `operator`.")
    command_ttl_s: float = Field(
        default=900.0, gt=0, description="An operator command signed longer ago than this is refused as stale (replays).",
    )
    barrier_timeout_s: float = Field(default=120.0, gt=0, description="A cutover's final sync fails after this.")
    topic_check_s: float = Field(
        default=15.0, gt=0,
        description="How often every service checks that the pipeline's topics exist, and creates missing ones again "
        "(a broker that lost its data, a topic deleted by hand).",
    )
    redrive_after_s: float = Field(
        default=120.0, gt=0,
        description="A school in dual write whose counts have not moved for this long is re-driven from its verified "
        "backup (records lost in flight, e.g. with a broker).",
    )
    max_clock_ahead_s: float = Field(
        default=600.0, ge=0,
        description="A change stamped further than this ahead of ingest's clock is quarantined (clock_ahead): it "
        "would outrank every later write of its record.",
    )
    validation_timeout_s: float = Field(default=300.0, gt=0, description="A cutover's final validation fails after this.")

    @property
    def resolved_ingest_topic(self) -> str:
        return self.ingest_topic or f"{self.topic_prefix}.ingest"
