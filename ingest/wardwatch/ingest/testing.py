"""Test support for ingest: configs for real test servers, a QoS 1 publisher, a dead-letter listener, counts.

Used by the test suite and handy for trying ingest by hand; it needs the servers of
:mod:`wardwatch.core.servers`, nothing else.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from wardwatch.core.config import Secret
from wardwatch.core.registry import (
    GatewayKit,
    KitDevice,
    RegistryDocument,
    WardManifest,
    encode_document,
    kit_from_bindings,
    kit_topic,
    manifest_topic,
)
from wardwatch.core.sampletime import EARLIEST_SAMPLE_MS
from wardwatch.core.schema import DeviceRole, Signal
from wardwatch.core.servers import Influxd, Mosquitto
from wardwatch.core.testing import DeadLetters, mqtt_settings, publish_all
from wardwatch.core.tomlfile import toml_text
from wardwatch.core.topics import parse_topic
from wardwatch.ingest.config import BatchSettings, InfluxSettings, IngestConfig, MetricsSettings, SubscriptionSettings
from wardwatch.ingest.pipeline import Ingestor
from wardwatch.ingest.sinks import V1Sink

__all__ = [
    "DATABASE",
    "TIMEOUT",
    "DeadLetters",
    "as_toml",
    "count",
    "ingest_config",
    "kits_for",
    "publish_all",
    "publish_kits_for",
    "publish_registry",
    "running_ingest",
]

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


_OXIMETER_SIGNALS = frozenset({Signal.SPO2, Signal.PULSE_RATE, Signal.PERFUSION_INDEX})


def kits_for(
    messages: list[tuple[str, bytes]], *, since_ms: int = EARLIEST_SAMPLE_MS, revision: int = 1
) -> list[RegistryDocument]:
    """Registry documents binding every (gateway, patient, device) that ``messages`` name since ``since_ms``:
    one kit per gateway, then one manifest per ward (the order the registry publishes in)."""
    bindings: dict[tuple[str, str], dict[str, KitDevice]] = {}
    for topic, _payload in messages:
        parts = parse_topic(topic)
        if parts.ward is None or parts.gateway is None or parts.patient is None or parts.device is None:
            continue
        role = DeviceRole.PULSE_OXIMETER if parts.signal in _OXIMETER_SIGNALS else DeviceRole.HEART_RATE_STRAP
        devices = bindings.setdefault((parts.ward, parts.gateway), {})
        binding = KitDevice(id=parts.device, patient=parts.patient, role=role, since=since_ms, name=parts.device)
        devices.setdefault(parts.device, binding)
    issued_at = time.time_ns() // 1_000_000
    kits = [
        kit_from_bindings(ward, gateway, revision, issued_at, devices.values())
        for (ward, gateway), devices in sorted(bindings.items())
    ]
    wards = sorted({kit.ward for kit in kits})
    manifests = [
        WardManifest(
            ward=ward, issued_at=issued_at, gateways={kit.gateway: kit.revision for kit in kits if kit.ward == ward}
        )
        for ward in wards
    ]
    return [*kits, *manifests]


def publish_registry(broker: Mosquitto, documents: list[RegistryDocument], *, user: str | None = None) -> None:
    """Publish registry documents retained with QoS 1, as the registry does (as ``user``, e.g. ``alerting``)."""
    messages = [
        (
            kit_topic(document.ward, document.gateway)
            if isinstance(document, GatewayKit)
            else manifest_topic(document.ward),
            encode_document(document),
        )
        for document in documents
    ]
    publish_all(broker, messages, client_id="test-registry", user=user, retain=True)


def publish_kits_for(
    broker: Mosquitto,
    messages: list[tuple[str, bytes]],
    *,
    user: str | None = None,
    since_ms: int = EARLIEST_SAMPLE_MS,
) -> list[RegistryDocument]:
    """Bind every source that ``messages`` name (:func:`kits_for`) and publish the documents; return them."""
    documents = kits_for(messages, since_ms=since_ms)
    publish_registry(broker, documents, user=user)
    return documents


def as_toml(config: IngestConfig) -> str:
    """The config as a TOML file's text (what ``wardwatch ingest --config`` reads)."""
    return toml_text(msgspec.to_builtins(config, enc_hook=lambda o: o.reveal() if isinstance(o, Secret) else str(o)))
