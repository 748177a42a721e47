"""Prometheus metrics of ingest: the consumers' common ones (:mod:`wardwatch.core.metrics`) and ingest's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wardwatch.core.metrics import ConsumerMetrics

__all__ = ["IngestMetrics"]


class IngestMetrics(ConsumerMetrics):
    """The counters, gauges and histograms of one ingest instance, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(
            "ingest", store="InfluxDB", retries_name="write_retries", up_name="database_up", registry=registry
        )
        r, p = self.registry, self.prefix
        self.written = Counter(f"{p}_points_written", "Points stored in InfluxDB", registry=r)
        self.provenance_refused = Counter(
            f"{p}_provenance_refused",
            "Samples (or device statuses) not stored: the registry did not bind their source then (reason)",
            ["reason"],
            registry=r,
        )
        self.provenance_held = Gauge(
            f"{p}_provenance_held_messages",
            "Messages held until their ward's registry documents arrive (start-up settle)",
            registry=r,
        )
        self.batch_points = Histogram(
            f"{p}_batch_points",
            "Points per written batch",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10_000, 50_000),
            registry=r,
        )
        self.batch_latency = Histogram(
            f"{p}_batch_latency_seconds",
            "From a batch's first message arriving to the batch being stored and acknowledged",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.write_seconds = Histogram(f"{p}_write_seconds", "Duration of one InfluxDB write request", registry=r)
        self.lag = Gauge(f"{p}_lag_seconds", "Now minus the time of the newest sample stored", registry=r)
