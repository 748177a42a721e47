"""Test support for ingest: configs for real test servers, a QoS 1 publisher, a dead-letter listener, counts.

Used by the test suite and handy for trying ingest by hand; it needs the servers of
:mod:`wardwatch.core.servers`, nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from wardwatch.core.config import Secret
from wardwatch.core.servers import Influxd, Mosquitto
from wardwatch.core.testing import DeadLetters, mqtt_settings, publish_all
from wardwatch.ingest.config import BatchSettings, InfluxSettings, IngestConfig, MetricsSettings, SubscriptionSettings
from wardwatch.ingest.pipeline import Ingestor
from wardwatch.ingest.sinks import V1Sink

__all__ = ["DATABASE", "TIMEOUT", "DeadLetters", "as_toml", "count", "ingest_config", "publish_all", "running_ingest"]

TIMEOUT = 30.0
DATABASE = "wardwatch"


def ingest_config(
    broker: Mosquitto,
    influxd: Influxd,
    *,
    client_id: str = "ingest-test",
    share_group: str | None = None,
    batch: BatchSettings | None = None,
    user: str | None = None,
    **influx: Any,
) -> IngestConfig:
    """An ingest config for the test servers (as ``user``, TLS if the broker has it; no metrics; fast retries)."""
    mqtt = mqtt_settings(broker, client_id, user)
    return IngestConfig(
        mqtt=mqtt,
        influx=InfluxSettings(url=influxd.url, database=DATABASE, **influx),
        batch=batch or BatchSettings(retry_min_s=0.05, retry_max_s=1.0),
        subscription=SubscriptionSettings(share_group=share_group),
        metrics=MetricsSettings(port=0),
    )


@contextlib.asynccontextmanager
async def running_ingest(config: IngestConfig) -> AsyncIterator[Ingestor]:
    """An in-process ingest, subscribed and with its schema made, until the block ends."""
    async with V1Sink(config.influx) as sink, Ingestor(config, sink) as ingestor:
        await ingestor.wait_ready(TIMEOUT)
        yield ingestor


async def count(influxd: Influxd, field: str = "value", measurement: str = "vitals", where: str = "") -> int:
    """``count(field)`` over the whole measurement in the raw policy (0 if nothing is there yet)."""
    query = f'SELECT count("{field}") FROM "raw"."{measurement}"'  # noqa: S608 (test code, trusted names)
    if where:
        query += f" WHERE {where}"
    try:
        result = await influxd.query(query, db=DATABASE)
    except Exception:  # the database does not exist yet
        return 0
    series = result["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


def as_toml(config: IngestConfig) -> str:
    """The config as a TOML file's text (what ``wardwatch ingest --config`` reads)."""
    data = msgspec.to_builtins(config, enc_hook=lambda o: o.reveal() if isinstance(o, Secret) else str(o))
    lines: list[str] = []
    for section, values in data.items():
        if not isinstance(values, dict):
            lines.insert(0, f"{section} = {_toml_value(values)}")
            continue
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items() if value is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
