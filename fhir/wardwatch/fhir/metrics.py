"""Prometheus metrics of the FHIR exporter: the consumers' common ones (:mod:`wardwatch.core.metrics`) and its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wardwatch.core.metrics import ConsumerMetrics

__all__ = ["FhirMetrics"]


class FhirMetrics(ConsumerMetrics):
    """The counters, gauges and histograms of one exporter, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(
            "fhir", store="the FHIR server", retries_name="retries", up_name="server_up", registry=registry
        )
        r, p = self.registry, self.prefix
        self.observations = Counter(f"{p}_observations_sent", "Observations in accepted transactions", registry=r)
        self.transactions = Counter(f"{p}_transactions", "Transactions by result", ["result"], registry=r)
        self.bytes_sent = Counter(f"{p}_bytes_sent", "Bytes of accepted transaction Bundles", registry=r)
        self.late_samples = Counter(
            f"{p}_late_samples",
            "Samples that came after their interval was exported (kept in InfluxDB, not in the record)",
            registry=r,
        )
        self.open_windows = Gauge(f"{p}_open_windows", "Intervals collecting samples", registry=r)
        self.transaction_seconds = Histogram(f"{p}_transaction_seconds", "Duration of one transaction", registry=r)
