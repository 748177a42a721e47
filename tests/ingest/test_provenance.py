"""Provenance in ingest (issue 12): a sample is stored only when the registry bound its source at its time.

The registry's documents are published here as the registry does (retained, QoS 1, as the ``alerting``
principal) with :mod:`wardwatch.core.registry`; the broker is the site's, with its ACL, so each gateway
publishes only under its own topics.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from wardwatch.core.broker import Site, write_site
from wardwatch.core.registry import GatewayKit, KitDevice, WardManifest, kit_from_bindings
from wardwatch.core.schema import DeviceRole, DeviceStatus, Sample, Signal, Vitals, encode
from wardwatch.core.servers import Influxd, Mosquitto, wait_for
from wardwatch.core.topics import device_status_topic, vitals_topic
from wardwatch.ingest.bench import make_stream
from wardwatch.ingest.config import IngestConfig, RegistrySettings
from wardwatch.ingest.pipeline import Ingestor
from wardwatch.ingest.testing import (
    TIMEOUT,
    DeadLetters,
    count,
    ingest_config,
    kits_for,
    publish_all,
    publish_registry,
    running_ingest,
)

WARD = "ward-a"
NOW_MS = time.time_ns() // 1_000_000
MINUTE_MS = 60_000


@dataclass
class SiteBroker:
    broker: Mosquitto
    letters: DeadLetters


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[SiteBroker]:
    """The site's broker (users and ACL of ``wardwatch broker init``): gateways gw-00 and gw-03 of ward-a."""
    site = Site(gateways={"gw-00": WARD, "gw-03": WARD})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    async with Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker:
        letters = DeadLetters(broker, "ingest", user="operator")
        try:
            yield SiteBroker(broker, letters)
        finally:
            letters.close()


def vitals(gateway: str, patient: str, device: str, signal: Signal, seq: int, *times: int) -> tuple[str, bytes]:
    message = Vitals(
        patient=patient,
        device=device,
        gateway=gateway,
        signal=signal,
        seq=seq,
        samples=tuple(Sample(t=t, v=70.0 + k) for k, t in enumerate(times)),
    )
    return vitals_topic(WARD, gateway, patient, device, signal), encode(message)


def config_for(broker: Mosquitto, influxd: Influxd, settle_s: float = 10.0) -> IngestConfig:
    config = ingest_config(broker, influxd, user="ingest")
    return msgspec.structs.replace(config, registry=RegistrySettings(settle_s=settle_s))


async def wait_stored(influxd: Influxd, expected: int, ingestor: Ingestor) -> None:
    async def reached() -> bool:
        seen = await count(influxd)
        assert seen <= expected, f"{seen} points stored, more than the {expected} accepted"
        return seen == expected

    await wait_for(reached, 60, interval=0.05, max_interval=0.25, what=f"{expected} samples stored")
    await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")


async def test_spoofed_sources_store_nothing_and_are_dead_lettered_with_their_reason(
    site: SiteBroker, influxd: Influxd
) -> None:
    """Issue 12's findings with gw-00's own credentials, in a steady stream that also carries the refused ones.

    (a) a patient no kit names, (b) p-3 who belongs to gw-03 (with her device, under gw-00's own topic),
    (c) topic and payload naming different patients; and a discharged patient's samples before admission
    and after discharge (those in between are stored).
    """
    broker = site.broker
    stream, stream_samples = make_stream(600, 1, start_ms=NOW_MS - 10 * MINUTE_MS)  # gw-00, p-00000, in ward-a
    admitted, discharged = NOW_MS - 30 * MINUTE_MS, NOW_MS - 20 * MINUTE_MS
    gw00 = kits_for(stream)[0]
    assert isinstance(gw00, GatewayKit)
    assert (gw00.ward, gw00.gateway) == (WARD, "gw-00")
    strap_of_p1 = KitDevice(
        id="hr-p1", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, since=admitted, until=discharged, name="hr-p1"
    )
    gw00 = kit_from_bindings(WARD, "gw-00", 1, NOW_MS, [*gw00.devices, strap_of_p1])
    strap_of_p3 = KitDevice(id="hr-p3", patient="p-3", role=DeviceRole.HEART_RATE_STRAP, since=admitted, name="hr-p3")
    gw03 = kit_from_bindings(WARD, "gw-03", 1, NOW_MS, [strap_of_p3])
    manifest = WardManifest(ward=WARD, issued_at=NOW_MS, gateways={"gw-00": 1, "gw-03": 1})
    await asyncio.to_thread(publish_registry, broker, [gw00, gw03, manifest], user="alerting")

    hr = Signal.HEART_RATE
    t = NOW_MS - 5 * MINUTE_MS
    spoof_topic, _ = vitals("gw-00", "p-00000", "hr-00000", hr, 1, t)
    _, other_patient = vitals("gw-00", "p-2", "hr-00000", hr, 1, t)
    refused = {
        "unknown patient": vitals("gw-00", "p-ghost", "hr-00000", hr, 1, t, t + 1),  # (a) wrong_patient x2
        "another gateway's patient": vitals("gw-00", "p-3", "hr-p3", hr, 1, t),  # (b) unknown_device
        "topic/payload mismatch": (spoof_topic, other_patient),  # (c) topic_mismatch
        "before admission and after discharge": vitals(
            "gw-00", "p-1", "hr-p1", hr, 1, admitted - 1, admitted, discharged - 1, discharged
        ),
    }
    status = DeviceStatus(
        patient="p-3", device="hr-p3", gateway="gw-00", t=t, role=DeviceRole.HEART_RATE_STRAP, connected=True
    )
    refused["another gateway's device status"] = (device_status_topic(WARD, "gw-00", "p-3", "hr-p3"), encode(status))
    accepted_of_refused = 2  # p-1's samples at admission and just before discharge
    messages = list(stream)
    for k, spoofed in enumerate(refused.values()):
        messages.insert(100 * (k + 1), spoofed)

    async with running_ingest(config_for(broker, influxd)) as ingestor:
        await asyncio.to_thread(publish_all, broker, messages, user="gw-00")
        await wait_stored(influxd, stream_samples + accepted_of_refused, ingestor)
        await wait_for(lambda: len(site.letters.letters) >= len(refused), TIMEOUT, what="dead letters")
        metrics = ingestor.metrics
        assert metrics.value("provenance_refused_total", reason="wrong_patient") == 2
        assert metrics.value("provenance_refused_total", reason="unknown_device") == 2  # (b)'s sample and status
        assert metrics.value("provenance_refused_total", reason="topic_mismatch") == 1
        assert metrics.value("provenance_refused_total", reason="not_bound_at_time") == 2
        assert metrics.value("dead_letters_total", cause="provenance") == len(refused)
        assert metrics.value("dead_letters_total", cause="malformed") == 0
    letters = site.letters.letters
    assert [(letter.topic, letter.payload) for letter in letters] == list(refused.values())
    reasons = [letter.reason for letter in letters]
    assert "wrong_patient x2" in reasons[0]
    assert "unknown_device x1" in reasons[1]
    assert "topic_mismatch x1" in reasons[2]
    assert "p-2" in reasons[2]
    assert "provenance refused 2 of 4 samples (not_bound_at_time x2)" in reasons[3]
    assert "unknown_device x1" in reasons[4]
    for patient in ("p-ghost", "p-3", "p-2"):
        assert await count(influxd, where=f"\"patient\" = '{patient}'") == 0
    assert await count(influxd, where="\"patient\" = 'p-1'") == accepted_of_refused
    assert await count(influxd, "connected", "device_status", where="\"patient\" = 'p-3'") == 0


async def test_ingest_holds_a_backlog_until_the_registry_arrives_and_then_stores_all_of_it(
    site: SiteBroker, influxd: Influxd
) -> None:
    """At start-up the session's queued vitals come before the registry's documents: held, not refused."""
    broker = site.broker
    messages, samples = make_stream(2000, 2, start_ms=NOW_MS - 10 * MINUTE_MS)  # gw-00 (ward-a), gw-01 (ward-b)
    site_config = config_for(broker, influxd, settle_s=120.0)  # longer than this test: only the registry ends it
    async with running_ingest(site_config):
        pass  # the persistent session exists: what is published now waits at the broker
    gw00_only = [(topic, payload) for topic, payload in messages if "/gw-00/" in topic]
    stored_samples = sum(len(msgspec.json.decode(payload)["samples"]) for _, payload in gw00_only)
    assert 0 < stored_samples < samples
    await asyncio.to_thread(publish_all, broker, gw00_only, user="gw-00")
    await asyncio.to_thread(publish_registry, broker, kits_for(gw00_only), user="alerting")
    async with running_ingest(site_config) as ingestor:
        assert ingestor.provenance is not None
        await wait_stored(influxd, stored_samples, ingestor)
        assert ingestor.provenance.held_total > 0, "the backlog was not held: the registry came first"
        assert ingestor.provenance.held == 0
        assert ingestor.metrics.value("dead_letters_total", cause="provenance") == 0
    assert site.letters.letters == []


async def test_a_ward_whose_registry_never_comes_is_judged_after_the_settle_time(
    site: SiteBroker, influxd: Influxd
) -> None:
    """The hold is bounded: without documents, held samples are refused (dead-lettered), never stored."""
    broker = site.broker
    message = vitals("gw-00", "p-0", "hr-0", Signal.HEART_RATE, 1, NOW_MS - MINUTE_MS)
    async with running_ingest(config_for(broker, influxd, settle_s=1.0)) as ingestor:
        assert ingestor.provenance is not None
        await asyncio.to_thread(publish_all, broker, [message], user="gw-00")
        await wait_for(lambda: ingestor.provenance is not None and ingestor.provenance.held_total == 1, TIMEOUT)
        await wait_for(lambda: len(site.letters.letters) == 1, TIMEOUT, what="the held sample judged")
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="acknowledged")
        assert ingestor.metrics.value("provenance_refused_total", reason="unknown_ward") == 1
    assert "unknown_ward" in site.letters.letters[0].reason
    assert await count(influxd) == 0


async def test_a_malformed_message_is_not_held_for_the_registry(site: SiteBroker, influxd: Influxd) -> None:
    """Its fate does not depend on the registry: dead-lettered at once, even while the registry is awaited."""
    broker = site.broker
    topic, _ = vitals("gw-00", "p-0", "hr-0", Signal.HEART_RATE, 1, NOW_MS)
    async with running_ingest(config_for(broker, influxd, settle_s=120.0)) as ingestor:
        assert ingestor.provenance is not None
        await asyncio.to_thread(publish_all, broker, [(topic, b"{not json")], user="gw-00")
        await wait_for(lambda: len(site.letters.letters) == 1, TIMEOUT, what="the malformed message dead-lettered")
        assert ingestor.provenance.held_total == 0
        assert ingestor.metrics.value("dead_letters_total", cause="malformed") == 1
