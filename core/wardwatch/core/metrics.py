"""Prometheus metrics shared by the MQTT consumers (ingest, fhir), and a ``/metrics`` endpoint on the event loop.

Needs ``prometheus-client``, which every service extra installs (a bare core install does not import this).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["ConsumerMetrics", "serve_metrics"]

_log = logging.getLogger(__name__)
_MAX_REQUEST: Final = 8192


class ConsumerMetrics:
    """What every ack-after-store consumer counts, named ``wardwatch_{service}_…``, in a registry of its own.

    A service adds its own metrics in a subclass; ``retries`` and ``up`` are named by it (e.g.
    ``write_retries``/``database_up`` for ingest, ``retries``/``server_up`` for fhir).
    """

    def __init__(
        self,
        service: str,
        *,
        store: str,
        retries_name: str,
        up_name: str,
        registry: CollectorRegistry | None = None,
    ) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        p = self.prefix = f"wardwatch_{service}"
        self.received = Counter(f"{p}_messages_received", "MQTT messages received", registry=r)
        self.acked = Counter(f"{p}_messages_acked", f"MQTT messages acknowledged after {store} took them", registry=r)
        self.dead_lettered = Counter(
            f"{p}_dead_letters", "Messages or records sent to the dead-letter topic, by cause", ["cause"], registry=r
        )
        self.retries = Counter(f"{p}_{retries_name}", f"Requests retried because {store} was unavailable", registry=r)
        self.skipped_acks = Counter(
            f"{p}_stale_acks_skipped",
            "Messages stored but not acknowledged because their connection was gone (they are redelivered)",
            registry=r,
        )
        self.in_flight = Gauge(f"{p}_in_flight_messages", "Messages received and not yet acknowledged", registry=r)
        self.up = Gauge(f"{p}_{up_name}", f"1 if the last request reached {store}", registry=r)
        self.mqtt_connected = Gauge(f"{p}_mqtt_connected", "1 while connected to the broker", registry=r)

    def value(self, name: str, **labels: str) -> float:
        """The current value of a sample, e.g. ``value("messages_acked_total")`` (0 if absent)."""
        found = self.registry.get_sample_value(f"{self.prefix}_{name}", labels)
        return found if found is not None else 0.0


async def _handle(registry: CollectorRegistry, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > _MAX_REQUEST:
            raise ValueError("request too large")
        method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        if method in {"GET", "HEAD"} and path.split("?", 1)[0] == "/metrics":
            body = generate_latest(registry)
            status, ctype = "200 OK", CONTENT_TYPE_LATEST
        else:
            body, status, ctype = b"not found: try /metrics\n", "404 Not Found", "text/plain; charset=utf-8"
        header = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(header.encode("latin-1") + (body if method != "HEAD" else b""))
        await writer.drain()
    except (TimeoutError, ValueError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> AsyncIterator[asyncio.Server]:
    """Serve ``GET /metrics`` of ``registry`` on ``host:port`` while the context is open (asyncio streams)."""
    server = await asyncio.start_server(lambda r, w: _handle(registry, r, w), host, port, limit=_MAX_REQUEST)
    _log.info("metrics on http://%s:%d/metrics", host, port)
    try:
        yield server
    finally:
        server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await server.wait_closed()
