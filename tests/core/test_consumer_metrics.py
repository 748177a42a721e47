"""The consumers' shared metrics and their ``/metrics`` endpoint (wardwatch.core.metrics)."""

from __future__ import annotations

import asyncio

from wardwatch.core.metrics import ConsumerMetrics, serve_metrics
from wardwatch.core.servers import free_port


async def _get(port: int, path: str) -> tuple[str, str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    response = (await reader.read()).decode()
    writer.close()
    head, _, body = response.partition("\r\n\r\n")
    return head.split("\r\n", 1)[0], body


async def test_consumer_metrics_are_named_by_service_and_served() -> None:
    metrics = ConsumerMetrics("demo", store="the store", retries_name="write_retries", up_name="store_up")
    metrics.received.inc(3)
    metrics.dead_lettered.labels("malformed").inc()
    metrics.up.set(1)
    assert metrics.value("messages_received_total") == 3
    assert metrics.value("dead_letters_total", cause="malformed") == 1
    assert metrics.value("write_retries_total") == 0
    port = free_port()
    async with serve_metrics(metrics.registry, "127.0.0.1", port):
        status, body = await _get(port, "/metrics")
        missing, _ = await _get(port, "/other")
    assert status == "HTTP/1.1 200 OK"
    assert "wardwatch_demo_messages_received_total 3.0" in body
    assert "wardwatch_demo_store_up 1.0" in body
    assert missing == "HTTP/1.1 404 Not Found"
