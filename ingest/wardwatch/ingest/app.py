"""The ingest service: sink, metrics endpoint and pipeline, run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging

from wardwatch.core.metrics import serve_metrics
from wardwatch.ingest.config import IngestConfig
from wardwatch.ingest.metrics import IngestMetrics
from wardwatch.ingest.pipeline import Ingestor
from wardwatch.ingest.sinks import make_sink

__all__ = ["run"]

_log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0


async def run(config: IngestConfig, *, stop: asyncio.Event | None = None, metrics: IngestMetrics | None = None) -> None:
    """Run ingest until ``stop`` is set (or the task is cancelled); on stop, store what was received."""
    stop = stop if stop is not None else asyncio.Event()
    metrics = metrics if metrics is not None else IngestMetrics()
    async with contextlib.AsyncExitStack() as stack:
        sink = await stack.enter_async_context(make_sink(config.influx))
        if config.metrics.port:
            await stack.enter_async_context(serve_metrics(metrics.registry, config.metrics.host, config.metrics.port))
        ingestor = await stack.enter_async_context(Ingestor(config, sink, metrics=metrics))
        # Start-up objects live forever: keep the cyclic GC from re-scanning them on every collection.
        gc.freeze()
        _log.info(
            "ingest running: %s -> %s (%s API)",
            ", ".join(config.subscription.topic_filters()),
            config.influx.url,
            config.influx.api,
        )
        await stop.wait()
        if not await ingestor.drain(DRAIN_TIMEOUT_S):
            _log.warning("stopping with %d messages not yet stored; the broker redelivers them", ingestor.in_flight)
