"""Prometheus metrics of the FHIR exporter, and its ``/metrics`` endpoint."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["FhirMetrics", "serve_metrics"]


class FhirMetrics:
    """The counters, gauges and histograms of one exporter, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "wardwatch_fhir"
        self.received = Counter(f"{p}_messages_received", "MQTT messages received", registry=r)
        self.acked = Counter(f"{p}_messages_acked", "MQTT messages acknowledged after the server accepted", registry=r)
        self.observations = Counter(f"{p}_observations_sent", "Observations in accepted transactions", registry=r)
        self.transactions = Counter(f"{p}_transactions", "Transactions by result", ["result"], registry=r)
        self.bytes_sent = Counter(f"{p}_bytes_sent", "Bytes of accepted transaction Bundles", registry=r)
        self.retries = Counter(f"{p}_retries", "Transactions retried because the server was unavailable", registry=r)
        self.dead_lettered = Counter(
            f"{p}_dead_letters", "Messages or windows dead-lettered (cause: malformed, rejected)", ["cause"], registry=r
        )
        self.late_samples = Counter(
            f"{p}_late_samples",
            "Samples that came after their interval was exported (kept in InfluxDB, not in the record)",
            registry=r,
        )
        self.skipped_acks = Counter(
            f"{p}_stale_acks_skipped", "Messages exported but not acknowledged: their connection was gone", registry=r
        )
        self.open_windows = Gauge(f"{p}_open_windows", "Intervals collecting samples", registry=r)
        self.in_flight = Gauge(f"{p}_in_flight_messages", "Messages received and not yet acknowledged", registry=r)
        self.server_up = Gauge(f"{p}_server_up", "1 if the last transaction reached the FHIR server", registry=r)
        self.mqtt_connected = Gauge(f"{p}_mqtt_connected", "1 while connected to the broker", registry=r)
        self.transaction_seconds = Histogram(f"{p}_transaction_seconds", "Duration of one transaction", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample, e.g. ``value("messages_acked_total")`` (0 if absent)."""
        found = self.registry.get_sample_value(f"wardwatch_fhir_{name}", labels)
        return found if found is not None else 0.0


@contextlib.asynccontextmanager
async def serve_metrics(metrics: FhirMetrics, host: str, port: int) -> AsyncIterator[web.AppRunner]:
    """Serve ``GET /metrics`` on ``host:port`` while the context is open."""

    async def handle(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield runner
    finally:
        await runner.cleanup()
