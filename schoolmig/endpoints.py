"""How every command finds the stack it talks to: one rule, in one place.

``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` from the environment when set; else those
of the ``schoolmig up`` running from the same state directory (``SCHOOLMIG_STATE_DIR``,
``<state_dir>/stack.json``). The stack file holds no password: a database that needs one
takes it from ``DATABASE_URL`` (or ``DATABASE_URL_FILE``) here.
"""

from __future__ import annotations

from shared.platform.settings import Settings


class NoStack(LookupError):
    """No broker or database to talk to; the message is one line that says what to set."""


def located(settings: Settings, *, database: bool = True) -> Settings:
    """``settings`` with the broker and database every command uses (see the module);
    ``database=False``: a command that reads the broker only needs no database."""
    from schoolmig.stack import StackInfo

    if settings.kafka_bootstrap_servers and (settings.database_url or not database):
        return settings
    running = StackInfo.load_running(settings.state_dir)
    if running is None:
        missing = [
            name
            for name, value in (
                ("KAFKA_BOOTSTRAP_SERVERS", settings.kafka_bootstrap_servers),
                ("DATABASE_URL", settings.database_url or not database),
            )
            if not value
        ]
        raise NoStack(
            f"no stack to talk to: no `schoolmig up` runs from {settings.state_dir} (SCHOOLMIG_STATE_DIR); "
            f"start one, or set {' and '.join(missing)}"
        )
    return settings.model_copy(
        update={
            "kafka_bootstrap_servers": settings.kafka_bootstrap_servers or running.kafka_bootstrap_servers,
            "database_url": settings.database_url or running.database_url,
        }
    )


def api_url(settings: Settings) -> str | None:
    """The coordinator's HTTP API of the running ``up``, if any."""
    from schoolmig.stack import StackInfo

    running = StackInfo.load_running(settings.state_dir)
    return running.api_url if running and running.api_url else None
