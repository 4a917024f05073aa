"""One settings model, read from the environment, for every service and the CLI.

Every field is documented in the README's configuration table; keep the two in step.
Secrets (the database password inside ``DATABASE_URL``, the API token, the signing keys)
come only from the environment or from files named by ``*_FILE`` variables; the tool
never writes them to disk, and they are left out of ``repr``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.catalog.domains import DEFAULT_KEY_ALIASES, Domain
from shared.catalog.timezones import ZONE_PATTERN, check_zone


class Settings(BaseSettings):
    # An empty variable counts as unset (compose's `${X:-}`): a default, or the secret's *_FILE, applies.
    model_config = SettingsConfigDict(env_prefix="SCHOOLMIG_", extra="ignore", env_ignore_empty=True)

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means the tooling starts an embedded broker.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL"),
        description="PostgreSQL DSN; unset means the tooling starts an embedded PostgreSQL. Holds the password: "
        "never in repr, logs or files the tool writes (`redact_dsn`).",
        repr=False,
    )
    topic_prefix: str = Field(default="schoolmig", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    ingest_topic: str | None = Field(default=None, description="The public ingest topic; default '<prefix>.ingest'.")
    partitions: int = Field(default=3, ge=1, description="Partitions per topic created by the tooling.")
    replication_factor: int = Field(default=1, ge=1)
    batch_records: int = Field(default=500, ge=1, description="Max source records in one batch message on the internal topics.")
    batch_bytes: int = Field(
        default=512 * 1024,
        ge=1024,
        description="Max bytes of one batch message before compression (one larger record goes alone).",
    )
    max_record_bytes: int = Field(
        default=400 * 1024,
        ge=1024,
        le=512 * 1024,
        description="A source record larger than this (as JSON) is quarantined as record_too_large: it could not travel in one message.",
    )
    max_nesting_depth: int = Field(
        default=32,
        ge=4,
        le=150,
        description="A source record nested deeper is quarantined as unrepresentable_value (a real one is 3 deep; "
        "the internal topics' parser stops at 200).",
    )
    key_aliases: dict[str, Domain] = Field(
        default_factory=lambda: dict(DEFAULT_KEY_ALIASES),
        description="More localStorage/export keys read as a domain, as JSON: "
        '{"attendanceRecords": "attendance"} (replaces the default table, shared.catalog.domains.DEFAULT_KEY_ALIASES). '
        "A key holding records that no table maps is a critical audit finding.",
    )
    max_attempts: int = Field(
        default=3,
        ge=1,
        description="Tries of a message that fails through its own fault before it goes to the dead letter.",
    )
    batch_size: int = Field(
        default=8, ge=1, description="Max batch messages a consumer takes at once (the loader: per transaction)."
    )
    batch_timeout_ms: int = Field(default=200, ge=1, description="Max wait to fill a consumer batch.")
    fetch_partition_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Max bytes a batch consumer fetches from one partition at a time (fairness across domains).",
    )
    default_timezone: str = Field(
        default="UTC",
        pattern=ZONE_PATTERN,
        description="The time zone of a school no operator set one for and whose clients report none "
        "(shared.catalog.timezones): a moment written into a date-only field is read as its calendar date there.",
    )
    _default_timezone = field_validator("default_timezone")(check_zone)

    compression: str = Field(
        default="zstd",
        pattern="^(none|gzip|snappy|lz4|zstd)$",
        description="Producer compression on the services' own topics (measured: `make bench`).",
    )
    client_compression: Literal["none", "gzip"] = Field(
        default="gzip",
        description="Producer compression on the topics clients read (control.modes, outcomes): one every stock "
        "client reads (kafkajs has no zstd, snappy or lz4 of its own).",
    )
    parent_wait_s: float = Field(
        default=15.0,
        ge=0,
        description="Longest a child's batch waits in its partition for parents on their way before it is parked.",
    )
    parent_pause_s: float = Field(default=0.3, gt=0, description="How long a partition whose batch waits for parents is paused.")
    metrics_port: int = Field(default=0, ge=0, description="Prometheus scrape port; 0 disables.")
    metrics_host: str = Field(default="127.0.0.1", description="Address the scrape endpoint binds.")
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`json`: one JSON object per line (time, level, service, logger, message, and "
        "school_id on lines about one school), for a log pipeline; `text`: for people.",
    )
    state_dir: Path = Field(
        default=Path(".schoolmig"),
        description="`schoolmig up`'s home: its PostgreSQL data (`postgres/`), stack file, secrets made by "
        "`schoolmig init` (`secrets/`), exports and logs.",
    )
    backup_dir: Path | None = Field(default=None, description="Where ingest writes backup files; default `<state_dir>/backups`.")
    embedded_fsync: bool = Field(
        default=True,
        description="The embedded PostgreSQL syncs every commit to disk (PostgreSQL's default). `false` only for "
        "throwaway runs, tests and benchmarks: a machine that stops then can forget acknowledged commits.",
    )
    max_snapshot_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1,
        description="Ingest refuses a snapshot larger than this (it holds one whole snapshot while releasing it).",
    )
    incomplete_snapshot_timeout_s: float = Field(
        default=300.0, gt=0, description="A snapshot still missing chunks this long after its first part is reported."
    )
    run_stall_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="`schoolmig run` gives up when nothing has moved for this long (never on a slow, healthy run).",
    )
    sync_poll_interval_s: float = Field(default=0.5, gt=0)
    graceful_timeout_s: float = Field(default=15.0, gt=0)
    api_port: int = Field(default=0, ge=0, description="Coordinator HTTP API port (`GET /schools/{id}/mode`); 0 disables.")
    api_host: str = Field(default="127.0.0.1", description="Address the coordinator's HTTP API binds.")
    api_token: str | None = Field(
        default=None, description="Bearer token required by mutating HTTP calls; unset disables them.", repr=False
    )
    service_key: SecretStr | None = Field(
        default=None,
        description="Secret the services sign and verify every internal message with (`schoolmig up` makes one).",
    )
    operator_keys: SecretStr | None = Field(
        default=None,
        description="The coordinator's operator keys, `name=key,…`: it acts only on commands they signed.",
    )
    operator: str = Field(
        default_factory=lambda: os.environ.get("USER", "operator") or "operator",
        pattern=r"^[A-Za-z0-9._@-]{1,64}$",
        description="Who the CLI signs operator commands as (the actor recorded).",
    )
    operator_key: SecretStr | None = Field(default=None, description="The CLI's key for signing operator commands as `operator`.")
    command_ttl_s: float = Field(
        default=900.0,
        gt=0,
        description="An operator command signed longer ago than this is refused as stale (replays).",
    )
    barrier_timeout_s: float = Field(default=120.0, gt=0, description="A cutover's final sync fails after this.")
    topic_check_s: float = Field(
        default=15.0,
        gt=0,
        description="How often every service checks that the pipeline's topics exist, and creates missing ones again "
        "(a broker that lost its data, a topic deleted by hand).",
    )
    redrive_after_s: float = Field(
        default=120.0,
        gt=0,
        description="A school in dual write whose counts have not moved for this long is re-driven from its verified "
        "backup (records lost in flight, e.g. with a broker).",
    )
    max_clock_ahead_s: float = Field(
        default=600.0,
        ge=0,
        description="A change stamped further than this ahead of ingest's clock is quarantined (clock_ahead): it "
        "would outrank every later write of its record.",
    )
    validation_timeout_s: float = Field(default=300.0, gt=0, description="A cutover's final validation fails after this.")
    local_grace_s: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="How long a cutover stands without rollback before the school's clients are told to archive their "
        "local copy to a file and clear it (the mode's clear_local).",
    )

    @property
    def backups(self) -> Path:
        """Where ingest writes backup files (``backup_dir``, else ``<state_dir>/backups``)."""
        return self.backup_dir or self.state_dir / "backups"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment first, then secrets from files (``*_FILE``), then the rest."""
        return init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings, file_secret_settings

    @property
    def resolved_ingest_topic(self) -> str:
        return self.ingest_topic or f"{self.topic_prefix}.ingest"


#: Secrets that may come from a file instead of the environment (Docker and Kubernetes
#: secrets): the variable named here holds the file's path. The variable itself wins.
SECRET_FILES = {
    "DATABASE_URL": "DATABASE_URL_FILE",
    "api_token": "SCHOOLMIG_API_TOKEN_FILE",
    "service_key": "SCHOOLMIG_SERVICE_KEY_FILE",
    "operator_keys": "SCHOOLMIG_OPERATOR_KEYS_FILE",
    "operator_key": "SCHOOLMIG_OPERATOR_KEY_FILE",
}


_VARIABLE_OF = {"DATABASE_URL": "DATABASE_URL"}

#: The secrets ``schoolmig init`` may write, as files of ``<state_dir>/secrets/`` (mode 0600).
STATE_SECRETS = ("service_key", "operator_key", "api_token")


def secrets_dir(state_dir: Path) -> Path:
    return state_dir / "secrets"


class SecretFiles(PydanticBaseSettingsSource):
    """Each secret of ``SECRET_FILES`` whose ``*_FILE`` variable is set, read from that file
    (trailing newline dropped); else, for those ``schoolmig init`` writes, the file of that name
    in ``<state_dir>/secrets/`` when the operator made one. A file that cannot be read is an
    error at start, naming the variable, never the content."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything is read at once, in __call__

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        own = secrets_dir(Path(os.environ.get("SCHOOLMIG_STATE_DIR") or ".schoolmig"))
        for key, variable in SECRET_FILES.items():
            if os.environ.get(_VARIABLE_OF.get(key, f"SCHOOLMIG_{key.upper()}")):
                continue  # the variable itself wins
            path = os.environ.get(variable) or (str(own / key) if key in STATE_SECRETS and (own / key).is_file() else None)
            if path:
                try:
                    found[key] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(f"{variable} names a file that cannot be read ({type(exc).__name__})") from None
        return found


def redact_dsn(dsn: str) -> str:
    """A DSN without its password, for what the tool prints or writes (``up``'s stack file,
    status, health, logs): the URL form's ``user:password@`` (cut on the raw text, so a
    password with ``/``, ``?`` or ``#`` in it goes too) and ``?password=``, and the keyword
    form's ``password=…``. What cannot be told apart is hidden whole."""
    if not _URL_SCHEME.match(dsn):  # keyword form: host=… user=… password='…' (which may hold '://')
        return _KEYWORD_PASSWORD.sub("", dsn).strip()
    scheme, rest = dsn.split("://", 1)
    if "@" in rest:
        userinfo, rest = rest.rsplit("@", 1)
        rest = f"{userinfo.split(':', 1)[0]}@{rest}"
    try:
        parts = urlsplit(f"{scheme}://{rest}")
        query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "password"])
        return urlunsplit(parts._replace(query=query))
    except ValueError:
        return f"{scheme}://<hidden>"


_URL_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_KEYWORD_PASSWORD = re.compile(r"""\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)\s*""", re.IGNORECASE)
