"""Logging set-up: one line per event, service name first. Ids only, never personal data."""

from __future__ import annotations

import logging
import sys


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {service} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Kafka client internals are chatty at INFO (group joins, metadata refreshes).
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
