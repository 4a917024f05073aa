"""OpenTelemetry metrics set-up, the same for every service.

Metrics go to a Prometheus scrape endpoint when ``SCHOOLMIG_METRICS_PORT`` is set.
Labels carry ids (school, domain, reason codes), never personal data.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server


@dataclass(frozen=True)
class PipelineMetrics:
    """The instruments the pipeline records into; one set per process."""

    records_loaded: metrics.Counter
    records_quarantined: metrics.Counter
    snapshots_released: metrics.Counter
    ingest_rejected: metrics.Counter
    records_mapped: metrics.Counter


_metrics: PipelineMetrics | None = None


def setup_telemetry(service: str, metrics_port: int = 0, metrics_host: str = "127.0.0.1") -> PipelineMetrics:
    global _metrics
    if _metrics is not None:
        return _metrics
    reader = PrometheusMetricReader()
    provider = MeterProvider(
        resource=Resource.create({"service.name": f"schoolmig-{service}"}), metric_readers=[reader]
    )
    metrics.set_meter_provider(provider)
    if metrics_port:
        start_http_server(metrics_port, addr=metrics_host)
    meter = metrics.get_meter("schoolmig")
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
    )
    return _metrics
