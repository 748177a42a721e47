"""ingest against a real mosquitto and a real influxd: exact counts through crashes and outages.

"Exact" means ``SELECT count(value)`` equals the number of samples published: nothing lost, and
redelivered messages did not add points (they rewrite the same series and timestamp). Every test first
binds the sources it publishes from (``publish_kits_for``: the registry's retained documents), since
ingest stores only samples whose provenance the registry confirms (``tests/ingest/test_provenance.py``);
``test_tls_and_authentication`` alone turns that off (its broker has no registry principal).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import msgspec

from wardwatch.core.metrics import serve_metrics
from wardwatch.core.schema import Sample, Signal, Vitals, encode
from wardwatch.core.servers import Influxd, Mosquitto, free_port, wait_for
from wardwatch.core.testing import wait_exactly
from wardwatch.core.topics import device_status_topic, vitals_topic
from wardwatch.ingest.bench import make_stream
from wardwatch.ingest.config import BatchSettings, RegistrySettings
from wardwatch.ingest.testing import (
    TIMEOUT,
    DeadLetters,
    as_toml,
    count,
    ingest_config,
    publish_all,
    publish_kits_for,
    running_ingest,
)

#: How long InfluxDB stays down in the outage test (the issue asks for 30 s; shorten locally if you like).
OUTAGE_S = float(os.environ.get("INGEST_TEST_OUTAGE_S", "30"))
NOW_MS = time.time_ns() // 1_000_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def stream(
    messages: int, *, patients: int = 20, start_ms: int = NOW_MS - HOUR_MS
) -> tuple[list[tuple[str, bytes]], int]:
    return make_stream(messages, patients, start_ms=start_ms)


async def wait_count(influxd: Influxd, expected: int, timeout: float = 60.0) -> None:
    """Wait until exactly ``expected`` samples are stored (never more)."""
    await wait_exactly(lambda: count(influxd), expected, timeout, "samples")


async def test_steady_run_stores_every_sample_exactly_once(mosquitto: Mosquitto, influxd: Influxd) -> None:
    messages, samples = stream(6000)
    documents = await asyncio.to_thread(publish_kits_for, mosquitto, messages)
    config = ingest_config(mosquitto, influxd)
    async with running_ingest(config) as ingestor:
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await wait_count(influxd, samples)
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
        assert ingestor.metrics.value("messages_acked_total") == len(messages) + len(documents)
        assert ingestor.max_in_flight <= config.batch.receive_maximum + 1
    assert await count(influxd, "seq") == samples
    per_signal = await influxd.query('SELECT count("value") FROM "raw"."vitals" GROUP BY "signal"', db="wardwatch")
    counted = {s["tags"]["signal"]: s["values"][0][1] for s in per_signal["results"][0]["series"]}
    assert set(counted) == {"heart_rate", "rr_interval", "spo2", "pulse_rate", "perfusion_index"}
    assert sum(counted.values()) == samples


async def test_schema_policies_and_continuous_query_are_created(mosquitto: Mosquitto, influxd: Influxd) -> None:
    config = ingest_config(mosquitto, influxd, raw_retention="7d", downsampled_retention="365d")
    async with running_ingest(config) as ingestor:
        await asyncio.wait_for(ingestor.schema_ready.wait(), TIMEOUT)
    policies = await influxd.query('SHOW RETENTION POLICIES ON "wardwatch"')
    rows = {row[0]: row for row in policies["results"][0]["series"][0]["values"]}
    assert rows["raw"][1] == "168h0m0s"
    assert rows["raw"][4] is True  # the default policy
    assert rows["downsampled"][1] == "8760h0m0s"
    queries = await influxd.query("SHOW CONTINUOUS QUERIES")
    cqs = next(s for s in queries["results"][0]["series"] if s["name"] == "wardwatch")["values"]
    assert len(cqs) == 1
    assert "INTO wardwatch.downsampled.vitals_1m" in cqs[0][1]
    # A restart with changed settings aligns the policy instead of failing.
    config = ingest_config(mosquitto, influxd, raw_retention="14d")
    async with running_ingest(config) as ingestor:
        await asyncio.wait_for(ingestor.schema_ready.wait(), TIMEOUT)
    policies = await influxd.query('SHOW RETENTION POLICIES ON "wardwatch"')
    assert {row[0]: row[1] for row in policies["results"][0]["series"][0]["values"]}["raw"] == "336h0m0s"


async def test_continuous_query_downsamples(mosquitto: Mosquitto, tmp_path: Path) -> None:
    async with Influxd(directory=tmp_path / "cq-influxd", continuous_queries=True) as influxd:
        config = ingest_config(mosquitto, influxd, downsample_every="1s", downsample_resample_for="10s")
        async with running_ingest(config):
            start = time.time_ns() // 1_000_000 - 3000
            messages, samples = stream(400, patients=2, start_ms=start)
            await asyncio.to_thread(publish_kits_for, mosquitto, messages)
            await asyncio.to_thread(publish_all, mosquitto, messages)
            await wait_count(influxd, samples)

            async def downsampled() -> bool:
                result = await influxd.query('SELECT count("mean") FROM "downsampled"."vitals_1s"', db="wardwatch")
                return bool(result["results"][0].get("series"))

            await wait_for(downsampled, TIMEOUT, interval=0.2, max_interval=0.5, what="downsampled points")


async def test_kill_9_mid_stream_then_restart_loses_nothing(
    mosquitto: Mosquitto, influxd: Influxd, tmp_path: Path
) -> None:
    """The real service process is SIGKILLed while it holds unacknowledged messages, then restarted."""
    messages, samples = stream(30_000)
    await asyncio.to_thread(publish_kits_for, mosquitto, messages)
    config = ingest_config(mosquitto, influxd, client_id="ingest-kill9")
    # the restart reads the registry documents it kept: its backlog (more than receive_maximum) is judged at once
    config = msgspec.structs.replace(config, registry=RegistrySettings(state_file=tmp_path / "registry.jsonl"))
    config_file = tmp_path / "ingest.toml"
    config_file.write_text(as_toml(config))
    command = [sys.executable, "-m", "wardwatch.core", "ingest", "--config", str(config_file)]
    log = (tmp_path / "ingest.log").open("ab")

    # WARDWATCH_* variables would override the config file: keep the caller's out.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WARDWATCH_")}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    def connected() -> bool:
        text = (tmp_path / "ingest.log").read_text()
        assert first.poll() is None, f"ingest exited: {text}"
        return "MQTT connected" in text

    first = start()
    try:
        await wait_for(connected, TIMEOUT, what="ingest connected")
        publisher = asyncio.create_task(asyncio.to_thread(publish_all, mosquitto, messages))

        async def some_stored() -> bool:
            return await count(influxd) >= 2000

        await wait_for(some_stored, 60, interval=0.01, max_interval=0.02, what="ingest under way")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = await count(influxd)
        await publisher
        assert at_kill < samples, "the kill came after the stream ended: nothing was mid-flight"
        second = start()
        try:
            await wait_count(influxd, samples, timeout=90)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()


async def test_influxdb_down_then_back_loses_nothing_and_bounds_memory(mosquitto: Mosquitto, influxd: Influxd) -> None:
    messages, samples = stream(12_000)
    await asyncio.to_thread(publish_kits_for, mosquitto, messages)
    receive_maximum = 2000
    batch = BatchSettings(receive_maximum=receive_maximum, max_points=500, retry_min_s=0.05, retry_max_s=2.0)
    config = ingest_config(mosquitto, influxd, batch=batch)
    async with running_ingest(config) as ingestor:
        half = len(messages) // 2
        await asyncio.to_thread(publish_all, mosquitto, messages[:half])
        await influxd.stop()
        outage_started = time.monotonic()
        await asyncio.to_thread(publish_all, mosquitto, messages[half:])
        # Backpressure: the broker stops sending at the Receive Maximum, and ingest holds no more.
        await wait_for(
            lambda: ingestor.in_flight >= receive_maximum * 0.9, TIMEOUT, what="in-flight window full while down"
        )
        await wait_for(lambda: ingestor.metrics.value("write_retries_total") > 0, TIMEOUT, what="write retries")
        # The outage lasts OUTAGE_S in all (the scenario itself, not a wait for a condition).
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_started)))
        assert ingestor.max_in_flight <= receive_maximum + 1  # one message past the limit stops reading
        assert ingestor.metrics.value("database_up") == 0
        await influxd.start()
        await wait_count(influxd, samples, timeout=60)
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
        assert ingestor.subscriber.generation == 1, "the MQTT connection dropped"
        assert ingestor.max_in_flight <= receive_maximum + 1  # one message past the limit stops reading


async def test_field_type_conflict_dead_letters_only_the_bad_point(
    mosquitto: Mosquitto, influxd: Influxd, dead_letters: DeadLetters
) -> None:
    """A type conflict poisons one shard (a day): only the sample that falls into it is refused."""
    config = ingest_config(mosquitto, influxd)
    async with running_ingest(config) as ingestor:
        await asyncio.wait_for(ingestor.schema_ready.wait(), TIMEOUT)
        old = NOW_MS - 3 * DAY_MS
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{influxd.url}/write?db=wardwatch&rp=raw&precision=ms",
                data=f'vitals,device=legacy,patient=p-legacy,signal=spo2,ward=ward-a value="high" {old}\n',
                raise_for_status=True,
            ),
        ):
            pass
        messages, samples = stream(1000)
        bad = Vitals(
            patient="p-00001",
            device="ox-00001",
            gateway="gw-01",
            signal=Signal.SPO2,
            seq=99,
            samples=(Sample(t=NOW_MS - HOUR_MS // 2, v=97.0), Sample(t=old + 1000, v=95.0)),
        )
        bad_topic = vitals_topic("ward-b", "gw-01", "p-00001", "ox-00001", "spo2")
        await asyncio.to_thread(publish_kits_for, mosquitto, messages)
        await asyncio.to_thread(publish_all, mosquitto, [*messages[:500], (bad_topic, encode(bad)), *messages[500:]])
        # + the good sample of the bad message (influxd 1.6 counts only the float points of a mixed-type field)
        await wait_count(influxd, samples + 1)
        await wait_for(lambda: len(dead_letters.letters) >= 1, TIMEOUT, what="a dead letter")
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
    assert len(dead_letters.letters) == 1
    letter = dead_letters.letters[0]
    assert "field type conflict" in letter.reason
    assert letter.topic == bad_topic
    assert letter.payload.endswith(f" {old + 1000}\n".encode())
    assert await count(influxd, where=f"time >= {NOW_MS - 2 * HOUR_MS}ms") == samples + 1


async def test_malformed_payloads_are_dead_lettered_and_counted(
    mosquitto: Mosquitto, influxd: Influxd, dead_letters: DeadLetters
) -> None:
    messages, samples = stream(300)
    topic = vitals_topic("ward-a", "gw-01", "p-1", "hr-1", "heart_rate")
    good = Vitals(
        patient="p-1",
        device="hr-1",
        gateway="gw-01",
        signal=Signal.HEART_RATE,
        seq=1,
        samples=(Sample(t=NOW_MS, v=70.0),),
    )
    spoofed = msgspec.structs.replace(good, patient="p-2")
    malformed = [
        (topic, b"\x00\xff not json"),
        (topic, encode(good).replace(b'"v":1', b'"v":2')),
        (topic, encode(msgspec.structs.replace(good, samples=(Sample(t=NOW_MS, v=900.0),)))),
        (topic, encode(spoofed)),
        (topic + "/extra", encode(good)),
        (device_status_topic("ward-a", "gw-01", "p-1", "hr-1"), b'{"v":1,"kind":"device_status"}'),
    ]
    await asyncio.to_thread(publish_kits_for, mosquitto, [*messages, (topic, encode(good))])
    config = ingest_config(mosquitto, influxd)
    async with running_ingest(config) as ingestor:
        await asyncio.to_thread(
            publish_all, mosquitto, [*messages[:100], *malformed, *messages[100:], (topic, encode(good))]
        )
        await wait_count(influxd, samples + 1)
        await wait_for(lambda: len(dead_letters.letters) >= len(malformed), TIMEOUT, what="dead letters")
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
        # the spoofed payload (ids other than its topic's) is a provenance refusal, the rest malformed
        assert ingestor.metrics.value("dead_letters_total", cause="malformed") == len(malformed) - 1
        assert ingestor.metrics.value("dead_letters_total", cause="provenance") == 1
    reasons = [letter.reason for letter in dead_letters.letters]
    assert [letter.payload for letter in dead_letters.letters] == [payload for _, payload in malformed]
    assert "not valid JSON" in reasons[0]
    assert "vitals message" in reasons[1]
    assert "impossible" in reasons[2]
    assert "topic_mismatch" in reasons[3]
    assert "levels" in reasons[4]
    assert "device_status" in reasons[5] or "missing" in reasons[5].lower()


async def test_two_instances_on_a_shared_subscription(mosquitto: Mosquitto, influxd: Influxd) -> None:
    messages, samples = stream(8000)
    documents = await asyncio.to_thread(publish_kits_for, mosquitto, messages)
    one = ingest_config(mosquitto, influxd, client_id="ingest-a", share_group="ingest")
    two = ingest_config(mosquitto, influxd, client_id="ingest-b", share_group="ingest")
    async with running_ingest(one) as first, running_ingest(two) as second:
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await wait_count(influxd, samples)
        await wait_for(lambda: first.in_flight == second.in_flight == 0, TIMEOUT, what="all acknowledged")
        received = (first.metrics.value("messages_received_total"), second.metrics.value("messages_received_total"))
    assert sum(received) == len(messages) + 2 * len(documents)  # each instance reads every registry document
    assert min(received) > len(documents), f"the broker did not split the stream: {received}"


async def test_metrics_endpoint(mosquitto: Mosquitto, influxd: Influxd) -> None:
    messages, samples = stream(200)
    documents = await asyncio.to_thread(publish_kits_for, mosquitto, messages)
    config = ingest_config(mosquitto, influxd)
    async with running_ingest(config) as ingestor:
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await wait_count(influxd, samples)
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
        port = free_port()
        async with (
            serve_metrics(ingestor.metrics.registry, "127.0.0.1", port),
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            text = await response.text()
    assert f"wardwatch_ingest_messages_received_total {float(len(messages) + len(documents))}" in text
    assert f"wardwatch_ingest_points_written_total {float(samples)}" in text
    names = ("batch_points_bucket", "batch_latency_seconds_bucket", "in_flight_messages", "lag_seconds")
    for name in (*names, "provenance_held_messages"):
        assert f"wardwatch_ingest_{name}" in text


async def test_tls_and_authentication(secure_mosquitto: Mosquitto, influxd: Influxd) -> None:
    """Over TLS with a password (the read buffer in front of an SSL socket); the ACL lets gw-01 publish."""
    messages = []
    for seq in range(3000):
        patient, signal_ = f"p-{seq % 7}", (Signal.HEART_RATE, Signal.SPO2)[seq % 2]
        device = f"d-{seq % 7}"
        vitals = Vitals(
            patient=patient,
            device=device,
            gateway="gw-01",
            signal=signal_,
            seq=seq,
            samples=(Sample(t=NOW_MS - HOUR_MS + seq, v=90.0),),
        )
        messages.append((vitals_topic("ward-a", "gw-01", patient, device, signal_), encode(vitals)))
    # about TLS and passwords: this broker has no registry principal, so provenance is off here
    config = ingest_config(secure_mosquitto, influxd, user="ingest")
    config = msgspec.structs.replace(config, registry=RegistrySettings(enforce=False))
    assert config.mqtt.tls
    async with running_ingest(config) as ingestor:
        assert ingestor.subscriber.buffered
        await asyncio.to_thread(publish_all, secure_mosquitto, messages, user="gw-01")
        await wait_count(influxd, len(messages))
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")


async def test_impossible_times_are_dead_lettered_not_stored(
    mosquitto: Mosquitto, influxd: Influxd, dead_letters: DeadLetters
) -> None:
    """Finding 3 (issue 11): a year-2126 point was stored (every "last value" query showed it), t = 0 a 1970 one."""
    messages, samples = stream(200)
    topic = vitals_topic("ward-a", "gw-01", "p-1", "ox-1", "spo2")
    good = Vitals(
        patient="p-1",
        device="ox-1",
        gateway="gw-01",
        signal=Signal.SPO2,
        seq=1,
        samples=(Sample(t=NOW_MS, v=97.0),),
    )
    century = NOW_MS + 100 * 365 * DAY_MS
    # bound since the epoch: the 1970 sample must reach the clock check, not be refused as before admission
    await asyncio.to_thread(publish_kits_for, mosquitto, [*messages, (topic, encode(good))], since_ms=0)
    impossible = [
        (topic, encode(msgspec.structs.replace(good, seq=2, samples=(Sample(t=century, v=97.0),)))),
        (topic, encode(msgspec.structs.replace(good, seq=3, samples=(Sample(t=0, v=97.0),)))),
    ]
    config = ingest_config(mosquitto, influxd)
    async with running_ingest(config) as ingestor:
        await asyncio.to_thread(
            publish_all, mosquitto, [*messages[:100], *impossible, *messages[100:], (topic, encode(good))]
        )
        await wait_count(influxd, samples + 1)
        await wait_for(lambda: len(dead_letters.letters) >= len(impossible), TIMEOUT, what="dead letters")
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
        assert ingestor.metrics.value("dead_letters_total", cause="clock") == len(impossible)
    assert all("device clock wrong" in letter.reason for letter in dead_letters.letters)
    assert await count(influxd, where=f"time > {NOW_MS + DAY_MS}ms") == 0
    assert await count(influxd, where=f"time < {NOW_MS - 365 * DAY_MS}ms") == 0
