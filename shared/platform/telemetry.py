"""OpenTelemetry metrics set-up, the same for every service.

Metrics go to a Prometheus scrape endpoint when ``SCHOOLMIG_METRICS_PORT`` is set, and
over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is (the standard OTel variables apply).
Labels carry ids (school, domain, reason codes), never personal data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server


@dataclass
class SchoolGauges:
    """What the coordinator last saw per school, read by the observable gauges' callbacks
    (which must not do I/O): phase index, progress 0..1, records per minute."""

    phase: dict[tuple[str, str], int] = field(default_factory=dict)  # (school, phase) -> 1 current / 0 not
    progress: dict[str, float] = field(default_factory=dict)
    speed: dict[str, float] = field(default_factory=dict)
    lag: dict[tuple[str, str], int] = field(default_factory=dict)  # (group, topic) -> messages behind

    @staticmethod
    def observe(values: Mapping[Any, float], *labels: str) -> Iterable[Observation]:
        for key, value in list(values.items()):
            yield Observation(value, dict(zip(labels, key if isinstance(key, tuple) else (key,), strict=True)))


@dataclass(frozen=True)
class PipelineMetrics:
    """The instruments the pipeline records into; one set per process (the plan's
    ``MigrationMetrics``). Labels are ids and codes, never personal data."""

    records_loaded: metrics.Counter
    records_quarantined: metrics.Counter
    snapshots_released: metrics.Counter
    ingest_rejected: metrics.Counter
    records_mapped: metrics.Counter
    messages_refused: metrics.Counter
    """Internal messages not acted on, by ``reason`` (unsigned, bad_signature, …) and ``topic``."""
    dead_letters: metrics.Counter
    """Messages sent to the dead letter, by ``service`` and ``reason``."""
    errors: metrics.Counter
    """By ``category``: transient (retried), consistency (a validation's critical issue), critical (a rollback)."""
    sync_duration: metrics.Histogram
    validation_duration: metrics.Histogram
    phase_transitions: metrics.Counter
    changes_received: metrics.Counter
    """Change events ingest accepted, by ``op`` and ``domain``."""
    changes_applied: metrics.Counter
    """Changes and snapshot records the loader judged by version (``shared.ledger.versions``), by ``outcome``:
    applied, deleted, revived, superseded."""
    schools: SchoolGauges


_metrics: PipelineMetrics | None = None
_ready = {"ready": 0}  # read by the readiness gauge's callback


def set_ready(ready: bool) -> None:
    """Whether this process serves: started, its consumers subscribed (``shared.service``),
    and not stopping. What ``python -m schoolmig.health`` reads from the scrape."""
    _ready["ready"] = int(ready)


def setup_telemetry(service: str, metrics_port: int = 0, metrics_host: str = "127.0.0.1") -> PipelineMetrics:
    global _metrics
    if _metrics is not None:
        return _metrics
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):  # the exporter reads the endpoint, headers… itself
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
            OTLPMetricExporter,
        )

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(resource=Resource.create({"service.name": f"schoolmig-{service}"}), metric_readers=readers)
    metrics.set_meter_provider(provider)
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)
    meter = metrics.get_meter("schoolmig")
    gauges = SchoolGauges()
    _metrics = PipelineMetrics(
        records_loaded=meter.create_counter(
            "schoolmig.records.loaded", unit="{record}", description="Source records written to PostgreSQL"
        ),
        records_quarantined=meter.create_counter(
            "schoolmig.records.quarantined", unit="{record}", description="Source records put in quarantine"
        ),
        snapshots_released=meter.create_counter(
            "schoolmig.snapshots.released", unit="{snapshot}", description="Snapshots verified and fanned out"
        ),
        ingest_rejected=meter.create_counter(
            "schoolmig.ingest.rejected", unit="{message}", description="Ingest messages sent to dead letter"
        ),
        records_mapped=meter.create_counter(
            "schoolmig.records.mapped", unit="{record}", description="Source records mapped to target rows"
        ),
        messages_refused=meter.create_counter(
            "schoolmig.messages.refused",
            unit="{message}",
            description="Internal messages refused: unsigned, forged, or from a principal not allowed to send them",
        ),
        dead_letters=meter.create_counter(
            "schoolmig.dead_letters", unit="{message}", description="Messages sent to the dead letter, by service and reason"
        ),
        errors=meter.create_counter(
            "schoolmig.errors", unit="{error}", description="Errors by category: transient, consistency, critical"
        ),
        sync_duration=meter.create_histogram(
            "schoolmig.sync.duration", unit="s", description="From dual write begun to every record accounted for"
        ),
        validation_duration=meter.create_histogram("schoolmig.validation.duration", unit="s", description="One validation run"),
        phase_transitions=meter.create_counter(
            "schoolmig.phase.transitions", unit="{transition}", description="Phase moves, by target phase"
        ),
        changes_received=meter.create_counter(
            "schoolmig.changes.received", unit="{change}", description="Change events accepted by ingest, by op and domain"
        ),
        changes_applied=meter.create_counter(
            "schoolmig.changes.applied",
            unit="{write}",
            description="Writes judged by version: applied, deleted, revived (a write over a tombstone), superseded (lost to a newer one)",
        ),
        schools=gauges,
    )
    meter.create_observable_gauge(
        "schoolmig.school.phase",
        callbacks=[lambda _: gauges.observe(gauges.phase, "school_id", "phase")],
        unit="1",
        description="1 for each school's current phase, 0 for the phases it left",
    )
    meter.create_observable_gauge(
        "schoolmig.school.progress",
        callbacks=[lambda _: gauges.observe(gauges.progress, "school_id")],
        unit="1",
        description="Share of the school's source records accounted for (loaded or quarantined)",
    )
    meter.create_observable_gauge(
        "schoolmig.consumer.lag",
        callbacks=[lambda _: gauges.observe(gauges.lag, "group", "topic")],
        unit="{message}",
        description="Messages not yet consumed, per consumer group and topic",
    )
    meter.create_observable_gauge(
        "schoolmig.service.ready",
        callbacks=[lambda _: [Observation(_ready["ready"], {"service": service})]],
        unit="1",
        description="1 while the process serves (started, consumers subscribed, not stopping), else 0",
    )
    meter.create_observable_gauge(
        "schoolmig.migration.speed",
        callbacks=[lambda _: gauges.observe(gauges.speed, "school_id")],
        unit="{record}/min",
        description="Records loaded per minute over the school's sync",
    )
    return _metrics


def count_error(category: str, where: str) -> None:
    """Count an error in a process whose telemetry is set up (a no-op elsewhere, e.g. the CLI)."""
    if _metrics is not None:
        _metrics.errors.add(1, {"category": category, "where": where})


def count_refused(reason: str, topic: str) -> None:
    """Count an internal message refused by its signature (``shared.platform.signing``)."""
    if _metrics is not None:
        _metrics.messages_refused.add(1, {"reason": reason, "topic": topic})


def count_dead_letter(service: str, reason: str) -> None:
    if _metrics is not None:
        _metrics.dead_letters.add(1, {"service": service, "reason": reason})
