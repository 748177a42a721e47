"""The FHIR exporter service: client, metrics endpoint and exporter, run until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wardwatch.core.metrics import serve_metrics
from wardwatch.fhir.client import FhirClient
from wardwatch.fhir.config import FhirConfig
from wardwatch.fhir.exporter import Exporter
from wardwatch.fhir.metrics import FhirMetrics

__all__ = ["run"]

_log = logging.getLogger(__name__)


async def run(config: FhirConfig, *, stop: asyncio.Event | None = None, metrics: FhirMetrics | None = None) -> None:
    """Run the exporter until ``stop`` is set (or the task is cancelled).

    Stopping does not force open windows out: their messages are not acknowledged, so the broker
    redelivers them to the next run, which exports the whole interval.
    """
    stop = stop if stop is not None else asyncio.Event()
    metrics = metrics if metrics is not None else FhirMetrics()
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(FhirClient(config.fhir))
        if config.metrics.port:
            await stack.enter_async_context(serve_metrics(metrics.registry, config.metrics.host, config.metrics.port))
        exporter = await stack.enter_async_context(Exporter(config, client, metrics=metrics))
        _log.info(
            "fhir exporter running: %s -> %s (%s, %d s intervals)",
            ", ".join(config.subscription.filters),
            config.fhir.url,
            config.export.representation,
            config.export.interval_s,
        )
        subscribed = asyncio.create_task(exporter.subscriber.wait_subscribed(None))

        def announce(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is None:
                _log.info("fhir exporter subscribed")

        subscribed.add_done_callback(announce)
        try:
            await stop.wait()
        finally:
            subscribed.cancel()
        _log.info("stopping with %d messages not yet exported; the broker redelivers them", exporter.in_flight)
