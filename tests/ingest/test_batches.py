"""Vitals batches in ingest: every sample of every series stored as if it came alone; provenance per sample."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from wardwatch.core.broker import Site, write_site
from wardwatch.core.errors import SchemaError
from wardwatch.core.registry import KitDevice, WardManifest, kit_from_bindings
from wardwatch.core.schema import DeviceRole, Sample, Series, Signal, Vitals, VitalsBatch, encode
from wardwatch.core.servers import Influxd, Mosquitto, wait_for
from wardwatch.core.topics import vitals_batch_topic, vitals_topic
from wardwatch.ingest.config import RegistrySettings
from wardwatch.ingest.lineprotocol import LineEncoder
from wardwatch.ingest.points import PointEncoder
from wardwatch.ingest.testing import (
    TIMEOUT,
    DeadLetters,
    count,
    ingest_config,
    publish_all,
    publish_registry,
    running_ingest,
)

WARD = "ward-a"
NOW_MS = time.time_ns() // 1_000_000
MINUTE_MS = 60_000


def batch(patient: str, device: str, gateway: str = "gw-00", **series: tuple[int, list[int]]) -> VitalsBatch:
    """A batch with one series per keyword: signal name -> (seq, sample times); values 1, 2, ..."""
    return VitalsBatch(
        patient=patient,
        device=device,
        gateway=gateway,
        series=tuple(
            Series(signal=Signal(name), seq=seq, samples=tuple(Sample(t=t, v=1.0 + k) for k, t in enumerate(times)))
            for name, (seq, times) in series.items()
        ),
    )


def test_a_batch_gives_the_points_its_series_would_alone() -> None:
    t = NOW_MS - MINUTE_MS
    message = batch("p-1", "hr-1", heart_rate=(4, [t, t + 1000]), rr_interval=(5, [t + 1, t + 2]))
    topic = vitals_batch_topic(WARD, "gw-00", "p-1", "hr-1")
    lines = LineEncoder()
    from_batch = [lines.line(p) for p in PointEncoder().points(topic, encode(message))]
    alone: list[str] = []
    for vitals in message.vitals():
        single = vitals_topic(WARD, "gw-00", "p-1", "hr-1", vitals.signal)
        alone += [lines.line(p) for p in PointEncoder().points(single, encode(vitals))]
    assert from_batch == alone
    assert len(from_batch) == 4
    assert sum("signal=rr_interval" in line and "seq=5i" in line for line in from_batch) == 2


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        (vitals_batch_topic(WARD, "gw-00", "p-2", "hr-1"), "do not match its topic"),
        (vitals_batch_topic(WARD, "gw-09", "p-1", "hr-1"), "do not match its topic"),
    ],
)
def test_a_batch_naming_another_source_than_its_topic_is_refused(topic: str, problem: str) -> None:
    message = batch("p-1", "hr-1", heart_rate=(0, [NOW_MS]))
    with pytest.raises(SchemaError, match=problem):
        PointEncoder().points(topic, encode(message))


def test_a_single_vitals_payload_on_a_batch_topic_is_refused() -> None:
    single = Vitals(
        patient="p-1",
        device="hr-1",
        gateway="gw-00",
        signal=Signal.HEART_RATE,
        seq=0,
        samples=(Sample(NOW_MS, 70),),
    )
    with pytest.raises(SchemaError, match="vitals_batch"):
        PointEncoder().points(vitals_batch_topic(WARD, "gw-00", "p-1", "hr-1"), encode(single))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[Mosquitto, DeadLetters]]:
    """The site's broker (users and ACL of ``wardwatch broker init``): gateway gw-00 of ward-a."""
    site = Site(gateways={"gw-00": WARD})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    async with Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker:
        letters = DeadLetters(broker, "ingest", user="operator")
        try:
            yield broker, letters
        finally:
            letters.close()


async def test_provenance_stores_a_batch_s_bound_samples_and_dead_letters_the_others(
    site: tuple[Mosquitto, DeadLetters], influxd: Influxd
) -> None:
    """p-1's strap was bound from ``admitted`` to ``discharged``: samples outside are refused one by one."""
    broker, letters = site
    admitted, discharged = NOW_MS - 30 * MINUTE_MS, NOW_MS - 20 * MINUTE_MS
    strap = KitDevice(
        id="hr-p1", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, since=admitted, until=discharged, name="hr-p1"
    )
    kit = kit_from_bindings(WARD, "gw-00", 1, NOW_MS, [strap])
    manifest = WardManifest(ward=WARD, issued_at=NOW_MS, gateways={"gw-00": 1})
    await asyncio.to_thread(publish_registry, broker, [kit, manifest], user="alerting")
    mixed = batch(
        "p-1",
        "hr-p1",
        heart_rate=(0, [admitted - 1, admitted, discharged - 1, discharged]),  # the first and last refused
        rr_interval=(1, [admitted + 1, admitted + 2]),  # both stored
    )
    foreign = batch("p-1", "hr-p1", heart_rate=(2, [discharged + 5]))  # refused whole
    topic = vitals_batch_topic(WARD, "gw-00", "p-1", "hr-p1")
    spoofed = (topic, encode(batch("p-2", "hr-p1", heart_rate=(3, [NOW_MS]))))  # payload names another patient
    config = msgspec.structs.replace(
        ingest_config(broker, influxd, user="ingest"), registry=RegistrySettings(settle_s=10.0)
    )
    async with running_ingest(config) as ingestor:
        await asyncio.to_thread(
            publish_all, broker, [(topic, encode(mixed)), (topic, encode(foreign)), spoofed], user="gw-00"
        )
        await wait_for(lambda: len(letters.letters) >= 3, TIMEOUT, what="dead letters")
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every message acknowledged")

        async def stored() -> bool:
            return await count(influxd, where="\"patient\" = 'p-1'") >= 4  # 2 heart rates, 2 RR intervals

        await wait_for(stored, TIMEOUT, what="the bound samples stored")
        assert await count(influxd, where="\"patient\" = 'p-1'") == 4
        assert await count(influxd, where="\"patient\" = 'p-1' AND \"signal\" = 'rr_interval'") == 2
        assert ingestor.metrics.value("provenance_refused_total", reason="not_bound_at_time") == 3
        assert ingestor.metrics.value("provenance_refused_total", reason="topic_mismatch") == 1
    reasons = [letter.reason for letter in letters.letters]
    assert "provenance refused 2 of 6 samples (not_bound_at_time x2)" in reasons[0]
    assert "provenance refused 1 of 1 samples (not_bound_at_time x1)" in reasons[1]
    assert "topic_mismatch x1" in reasons[2]
    assert await count(influxd, where="\"patient\" = 'p-2'") == 0
