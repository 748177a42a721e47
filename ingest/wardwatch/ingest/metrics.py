"""Prometheus metrics of ingest, and the ``/metrics`` HTTP endpoint (aiohttp, on the event loop)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["IngestMetrics", "serve_metrics"]


class IngestMetrics:
    """The counters, gauges and histograms of one ingest instance, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = "wardwatch_ingest"
        self.received = Counter(f"{p}_messages_received", "MQTT messages received", registry=r)
        self.acked = Counter(f"{p}_messages_acked", "MQTT messages acknowledged after storing", registry=r)
        self.written = Counter(f"{p}_points_written", "Points stored in InfluxDB", registry=r)
        self.dead_lettered = Counter(
            f"{p}_dead_letters",
            "Messages or points sent to the dead-letter topic (cause: malformed message, rejected point)",
            ["cause"],
            registry=r,
        )
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
        self.write_retries = Counter(
            f"{p}_write_retries", "Writes retried because InfluxDB was unavailable", registry=r
        )
        self.redelivery_skipped_acks = Counter(
            f"{p}_stale_acks_skipped",
            "Messages stored but not acknowledged because their connection was gone (they are redelivered)",
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
        self.in_flight = Gauge(f"{p}_in_flight_messages", "Messages received and not yet acknowledged", registry=r)
        self.lag = Gauge(f"{p}_lag_seconds", "Now minus the time of the newest sample stored", registry=r)
        self.database_up = Gauge(f"{p}_database_up", "1 if the last write reached InfluxDB", registry=r)
        self.mqtt_connected = Gauge(f"{p}_mqtt_connected", "1 while connected to the broker", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample, e.g. ``value("messages_acked_total")`` (0 if absent)."""
        found = self.registry.get_sample_value(f"wardwatch_ingest_{name}", labels)
        return found if found is not None else 0.0


@contextlib.asynccontextmanager
async def serve_metrics(metrics: IngestMetrics, host: str, port: int) -> AsyncIterator[web.AppRunner]:
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
