"""Prometheus metrics of the gateway, read from its parts at scrape time, and a tiny ``/metrics`` server.

Nothing is counted twice: the sessions, decoders, recorder, queue and publisher already keep their
figures, and :class:`GatewayCollector` turns them into metric families when scraped (on the event
loop, so it reads a consistent state). Labels carry no patient ids: everything is aggregated over
the gateway's devices, except with ``[metrics] device_labels = true``, which adds per-device
last-seen ages labelled by the pseudonymous *device* id only.

The HTTP server is plain ``asyncio`` (the gateway has no web framework): ``GET /metrics`` answers
the text exposition format, anything else 404. Bind it to loopback (the default) unless a firewall
guards the port; it serves no patient data but does reveal device counts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wardwatch.core.metrics import serve_metrics  # the shared endpoint, re-exported for the gateway
from wardwatch.gateway.ble import SESSION_END_REASONS

if TYPE_CHECKING:
    from wardwatch.gateway.app import Gateway
    from wardwatch.gateway.ble import DeviceSession

__all__ = ["METRIC_NAMES", "GatewayCollector", "gateway_registry", "serve_metrics"]

_log = logging.getLogger(__name__)

P: Final = "wardwatch_gateway"

#: Every metric family the gateway exposes (counters without their ``_total`` suffix).
METRIC_NAMES: Final = (
    f"{P}_notifications_received",
    f"{P}_notifications_malformed",
    f"{P}_readings_queued",
    f"{P}_samples_queued",
    f"{P}_device_status_queued",
    f"{P}_messages_published",
    f"{P}_publish_retries",
    f"{P}_messages_dropped",
    f"{P}_messages_dead_lettered",
    f"{P}_queue_depth",
    f"{P}_queue_capacity",
    f"{P}_queue_commits",
    f"{P}_queue_commit_failing",
    f"{P}_in_flight_messages",
    f"{P}_mqtt_connected",
    f"{P}_devices_bound",
    f"{P}_devices_connected",
    f"{P}_connection_slots",
    f"{P}_devices_waiting_for_slot",
    f"{P}_devices_never_connected",
    f"{P}_device_connects",
    f"{P}_device_reconnects",
    f"{P}_session_ends",
    f"{P}_backfilled_records",
    f"{P}_adapter_scans",
    f"{P}_adapter_recoveries",
    f"{P}_last_seen_age_max_seconds",
    f"{P}_devices_silent",
    f"{P}_device_last_seen_age_seconds",
    f"{P}_watchdog_healthy",
)


class GatewayCollector(Collector):
    """Reads a running :class:`~wardwatch.gateway.app.Gateway` into metric families."""

    def __init__(
        self, gateway: Gateway, *, device_labels: bool = False, clock: Callable[[], float] = time.time
    ) -> None:
        self.gateway = gateway
        self.device_labels = device_labels
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families are built at scrape time."""
        return ()

    def collect(self) -> Iterable[Metric]:
        """The gateway's figures now."""
        g = self.gateway
        sessions = g.sessions
        decoders = [s.decoder for s in sessions]
        queue, publisher, radio, mqtt = g.queue, g.publisher, g.radio, g.mqtt
        recorder = g.recorder

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{P}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{P}_{name}", doc, value=value)

        yield counter(
            "notifications_received", "BLE notifications and reads received", sum(d.notifications for d in decoders)
        )
        yield counter(
            "notifications_malformed", "Notifications skipped as malformed", sum(d.malformed for d in decoders)
        )
        yield counter(
            "readings_queued",
            "Vitals messages queued (vitals_batch: one per device and commit; vitals: one per signal and notification)",
            recorder.recorded if recorder else 0,
        )
        yield counter("samples_queued", "Vitals samples queued", recorder.samples if recorder else 0)
        yield counter("device_status_queued", "Device status messages queued", recorder.statuses if recorder else 0)
        yield counter(
            "messages_published",
            "Queued messages the broker acknowledged (PUBACK)",
            publisher.acked if publisher else 0,
        )
        yield counter("publish_retries", "Publishes re-sent after a failure", publisher.retried if publisher else 0)
        yield counter(
            "messages_dropped",
            "Oldest messages dropped because the queue was full",
            queue.dropped_total if queue else 0,
        )
        yield counter(
            "messages_dead_lettered",
            "Messages the broker refused for good (kept in the dead-letter table)",
            queue.dead_lettered_total if queue else 0,
        )
        yield gauge("queue_depth", "Messages waiting for the broker", queue.depth if queue else 0)
        yield gauge("queue_capacity", "Queue bound (max messages)", g.config.queue.max_messages)
        yield counter("queue_commits", "Queue transactions committed", queue.commits if queue else 0)
        yield gauge(
            "queue_commit_failing",
            "1 while the last queue commit failed",
            1 if queue is not None and queue.last_commit_error is not None else 0,
        )
        yield gauge("in_flight_messages", "Publishes awaiting their PUBACK", publisher.in_flight if publisher else 0)
        yield gauge(
            "mqtt_connected", "1 while connected to the broker", 1 if mqtt is not None and mqtt.is_connected else 0
        )
        yield gauge("devices_bound", "Devices bound in the config", len(g.config.devices))
        yield gauge("devices_connected", "Bound devices connected now", sum(s.connected for s in sessions))
        yield gauge(
            "connection_slots", "Connection slots of the adapter (ble.max_connections)", g.config.ble.max_connections
        )
        yield gauge(
            "devices_waiting_for_slot",
            "Bound devices in sight that cannot connect because every connection slot is in use",
            len(radio.waiting) if radio else 0,
        )
        yield gauge(
            "devices_never_connected",
            "Bound devices not connected once since the gateway started",
            sum(s.connects == 0 and not s.connected for s in sessions),
        )
        yield counter("device_connects", "Device connections established", sum(s.connects for s in sessions))
        yield counter(
            "device_reconnects",
            "Device connections after each device's first",
            sum(max(0, s.connects - 1) for s in sessions),
        )
        ends = CounterMetricFamily(
            f"{P}_session_ends", "Connection attempts and sessions that ended, by reason", labels=["reason"]
        )
        for reason in SESSION_END_REASONS:
            ends.add_metric([reason], sum(s.ends.get(reason, 0) for s in sessions))
        yield ends
        yield counter(
            "backfilled_records", "Stored oximeter records fetched (RACP)", sum(s.backfilled for s in sessions)
        )
        yield counter("adapter_scans", "Scans run", radio.scans if radio else 0)
        yield counter(
            "adapter_recoveries", "Adapter recoveries (scanner heard nothing)", radio.recoveries if radio else 0
        )
        yield from self._last_seen(sessions)
        yield gauge(
            "watchdog_healthy",
            "1 while queue commits succeed (else the systemd watchdog ping is withheld)",
            int(g.queue_healthy()),
        )

    def _last_seen(self, sessions: Sequence[DeviceSession]) -> Iterable[Metric]:
        now_ms = self._clock() * 1000
        stale_after = self.gateway.config.ble.stale_after_s
        ages = [
            max(0.0, (now_ms - s.decoder.last_seen_ms) / 1000)
            for s in sessions
            if s.connected and s.decoder.last_seen_ms is not None
        ]
        yield GaugeMetricFamily(
            f"{P}_last_seen_age_max_seconds",
            "Seconds since the least recently heard connected device last sent anything (NaN: none connected)",
            value=max(ages) if ages else math.nan,
        )
        silent = sum(
            1
            for s in sessions
            if s.decoder.last_seen_ms is None or (now_ms - s.decoder.last_seen_ms) / 1000 > stale_after
        )
        yield GaugeMetricFamily(
            f"{P}_devices_silent", f"Bound devices not heard for more than stale_after_s ({stale_after:g} s)", silent
        )
        if self.device_labels:
            per_device = GaugeMetricFamily(
                f"{P}_device_last_seen_age_seconds",
                "Seconds since each device (pseudonymous device id) last sent anything",
                labels=["device"],
            )
            for s in sessions:
                if s.decoder.last_seen_ms is not None:
                    per_device.add_metric([s.binding.id], max(0.0, (now_ms - s.decoder.last_seen_ms) / 1000))
            yield per_device


def gateway_registry(
    gateway: Gateway, *, device_labels: bool = False, clock: Callable[[], float] = time.time
) -> CollectorRegistry:
    """A registry of its own holding the gateway's collector (no process-global state)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gateway, device_labels=device_labels, clock=clock))
    return registry
