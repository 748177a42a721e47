"""``wardwatch bench ingest``: ingest throughput against the limit, a bare paho subscriber, on one stream.

Each run, for each phase, makes the consumer's persistent session, publishes the whole stream into
it (a paho publisher in its own process, QoS 1), then starts the consumer in its own process and
times it from its start to the end, so both drain the same backlog on the same broker:

* raw: a stock paho 2 subscriber (``loop_forever``, automatic PUBACK) counting messages, nothing else;
* ingest: ``wardwatch.ingest.app.run`` (the service itself) into a fresh InfluxDB database; the end
  is when it has acknowledged every message, which it does only after InfluxDB answered 204 for the
  batch holding it (points are readable then). Then ``SELECT count(seq)`` there must equal the number
  of samples published (polled up to 60 s): any shortfall is ``lost``. Polling the count during the
  run instead would spend the database's CPU, shared with ingest on 2 cores, on the measurement.

``ratio`` is ingest messages/s over raw messages/s. CPU (user + system) is the consumer process's own,
from its start to its end; ``rss_mb`` is the ingest process's peak resident set (``VmHWM``: Linux
carries ``ru_maxrss`` across ``exec`` from the parent, so it would report the benchmark's own size).
Phases alternate (raw, ingest, ingest, raw, ...) so load from other processes hits both alike;
``ratio`` is the median of the per-run ratios, the other figures are medians; ``lost`` is the largest
shortfall of any run. ``cpu_ratio`` (raw CPU per message over ingest CPU per message) does not depend
on how busy the machine is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wardwatch.core import topics
from wardwatch.core.registry import encode_document
from wardwatch.core.schema import Quality, Sample, Signal, Vitals, encode
from wardwatch.core.servers import Influxd, Mosquitto, wait_for
from wardwatch.ingest.testing import kits_for, publish_registry

__all__ = ["make_stream", "run_bench"]

VITALS_FILTER = topics.vitals_filter()
INGEST_FILTERS = [topics.vitals_filter(), topics.ward_filter(topics.DEVICE)]
VERIFY_TIMEOUT_S = 180.0  # for the whole stream to be acknowledged


def make_stream(messages: int, patients: int, *, start_ms: int, seed: int = 5) -> tuple[list[tuple[str, bytes]], int]:
    """A realistic vitals stream: per patient and second, heart rate and RR intervals from a chest strap,
    SpO2, pulse rate and perfusion index from an oximeter. Returns ``(topic, payload)`` pairs and the
    number of samples."""
    rng = random.Random(seed)
    out: list[tuple[str, bytes]] = []
    samples = 0
    seq: dict[tuple[str, str], int] = {}
    second = 0
    while len(out) < messages:
        for p in range(patients):
            ward, gateway, patient = f"ward-{'ab'[p % 2]}", f"gw-{p % 10:02d}", f"p-{p:05d}"
            strap, oxi = f"hr-{p:05d}", f"ox-{p:05d}"
            t = start_ms + second * 1000 + p  # patients are not in lockstep
            hr = rng.uniform(55, 110)
            rr_count = rng.choice((1, 1, 2))
            plan: list[tuple[str, Signal, tuple[Sample, ...]]] = [
                (strap, Signal.HEART_RATE, (Sample(t=t, v=round(hr)),)),
                (
                    strap,
                    Signal.RR_INTERVAL,
                    tuple(
                        Sample(t=t + 1 + k * 400, v=round(60 / hr + rng.uniform(-0.02, 0.02), 4))
                        for k in range(rr_count)
                    ),
                ),
                (
                    oxi,
                    Signal.SPO2,
                    (
                        Sample(
                            t=t,
                            v=float(rng.randint(88, 100)),
                            q=(Quality.LOW_PERFUSION,) if rng.random() < 0.05 else (),
                        ),
                    ),
                ),
                (oxi, Signal.PULSE_RATE, (Sample(t=t, v=float(round(hr + rng.uniform(-2, 2)))),)),
                (oxi, Signal.PERFUSION_INDEX, (Sample(t=t, v=round(rng.uniform(0.5, 12.0), 2)),)),
            ]
            for device, signal_, items in plan:
                if len(out) >= messages:
                    break
                n = seq[(device, signal_)] = seq.get((device, signal_), -1) + 1
                message = Vitals(patient=patient, device=device, gateway=gateway, signal=signal_, seq=n, samples=items)
                out.append((topics.vitals_topic(ward, gateway, patient, device, signal_), encode(message)))
                samples += len(items)
        second += 1
    return out, samples


# --- child processes -----------------------------------------------------------------------------


def _connect_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    return properties


def _make_session(host: str, port: int, client_id: str, filters: list[str]) -> None:
    """Create a persistent session with subscriptions, then leave, so messages queue for it."""
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect(host, port, clean_start=True, properties=_connect_properties())
    client.loop_start()
    try:
        client.subscribe([(f, 1) for f in filters])
        if not subscribed.wait(10):
            raise RuntimeError("no SUBACK for the benchmark session")
    finally:
        client.disconnect()
        client.loop_stop()


def _child_publish(host: str, port: int, path: str) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    infos = []
    with open(path, "rb") as stream:
        for line in stream:
            topic, _, payload = line.rstrip(b"\n").partition(b"\t")
            infos.append(client.publish(topic.decode(), payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    client.disconnect()
    client.loop_stop()


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _child_raw(host: str, port: int, client_id: str, expected: int) -> None:
    count = 0

    def on_message(client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            client.disconnect()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_message = on_message
    start, cpu0 = time.time(), _cpu_s()
    client.connect(host, port, clean_start=False, properties=_connect_properties())
    client.loop_forever()
    end = time.time()
    print(json.dumps({"start": start, "end": end, "count": count, "cpu_s": _cpu_s() - cpu0, "rss_mb": _peak_rss_mb()}))


def _child_ingest(config_path: str, expected: int) -> None:
    from wardwatch.core.config import load_config
    from wardwatch.ingest.app import run
    from wardwatch.ingest.config import IngestConfig
    from wardwatch.ingest.metrics import IngestMetrics

    config = load_config(IngestConfig, config_path)
    metrics = IngestMetrics()

    async def watch(start: float, cpu0: float) -> None:
        await wait_for(
            lambda: metrics.value("messages_acked_total") >= expected,
            VERIFY_TIMEOUT_S,
            interval=0.005,
            max_interval=0.005,
        )
        result = {"start": start, "end": time.time(), "cpu_s": _cpu_s() - cpu0, "rss_mb": _peak_rss_mb()}
        print(json.dumps(result), flush=True)

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        start, cpu0 = time.time(), _cpu_s()
        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(watch(start, cpu0))
            await run(config, stop=stop, metrics=metrics)
            watcher.cancel()

    asyncio.run(main())


# --- the benchmark -------------------------------------------------------------------------------


def _child(*args: str) -> list[str]:
    return [sys.executable, "-m", "wardwatch.ingest.bench", *args]


async def _run_child(args: list[str]) -> str:
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{args[3]} child failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    return out.decode()


async def _count(influx: Influxd, database: str) -> int:
    try:
        result = await influx.query('SELECT count("seq") FROM "raw"."vitals"', db=database)
    except Exception:  # the database does not exist before ingest creates it
        return 0
    series = result["results"][0].get("series")
    return int(series[0]["values"][0][1]) if series else 0


async def _phase_raw(broker: Mosquitto, stream_file: Path, run: int, messages: int) -> dict[str, float]:
    client_id = f"bench-raw-{run}"
    await asyncio.to_thread(_make_session, broker.host, broker.port, client_id, [VITALS_FILTER])
    await _run_child(_child("publish", broker.host, str(broker.port), str(stream_file)))
    result = json.loads(await _run_child(_child("raw", broker.host, str(broker.port), client_id, str(messages))))
    seconds = result["end"] - result["start"]
    return {
        "msgs_per_s": result["count"] / seconds,
        "seconds": seconds,
        "cpu_us_per_msg": result["cpu_s"] / max(1, result["count"]) * 1e6,
        "rss_mb": result["rss_mb"],
        "lost": messages - result["count"],
    }


async def _phase_ingest(
    broker: Mosquitto, influx: Influxd, stream_file: Path, run: int, messages: int, samples: int, max_points: int
) -> dict[str, float]:
    client_id, database = f"bench-ingest-{run}", f"bench{run}"
    config = stream_file.parent / f"ingest-{run}.toml"
    text = f"""log_level = "WARNING"
[mqtt]
host = "{broker.host}"
port = {broker.port}
tls = false
client_id = "{client_id}"
[influx]
url = "{influx.url}"
database = "{database}"
[batch]
max_points = {max_points}
[metrics]
port = 0
[registry]
state_file = "{stream_file.parent / "registry.jsonl"}"
"""
    await asyncio.to_thread(config.write_text, text)
    await asyncio.to_thread(_make_session, broker.host, broker.port, client_id, INGEST_FILTERS)
    await _run_child(_child("publish", broker.host, str(broker.port), str(stream_file)))
    proc = await asyncio.create_subprocess_exec(
        *_child("ingest", str(config), str(messages)), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stored = 0
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), VERIFY_TIMEOUT_S)

        async def all_stored() -> bool:
            nonlocal stored
            stored = await _count(influx, database)
            return stored >= samples

        with contextlib.suppress(TimeoutError):
            await wait_for(all_stored, 60, interval=0.05, max_interval=0.5, what="every sample stored")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await proc.communicate()
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"ingest child failed ({proc.returncode}): {err.decode(errors='replace')[-2000:]}")
    result = json.loads(line)
    seconds = result["end"] - result["start"]
    return {
        "samples_per_s": stored / seconds,
        "msgs_per_s": messages / seconds if stored >= samples else 0.0,
        "seconds": seconds,
        "cpu_us_per_sample": result["cpu_s"] / max(1, stored) * 1e6,
        "cpu_us_per_msg": result["cpu_s"] / messages * 1e6,
        "rss_mb": result["rss_mb"],
        "lost": samples - stored,
    }


async def run_bench(*, messages: int, patients: int, repeat: int, max_points: int = 5000) -> dict[str, Any]:
    """Run both phases ``repeat`` times on one broker and one database server; return the JSON report."""
    stream, samples = make_stream(messages, patients, start_ms=time.time_ns() // 1_000_000 - 3_600_000)
    runs: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="wardwatch-bench-") as tmp:
        stream_file = Path(tmp) / "stream.tsv"
        stream_file.write_bytes(b"".join(topic.encode() + b"\t" + payload + b"\n" for topic, payload in stream))
        # Provenance: every source bound; ingest starts with the documents kept by an earlier run, as after a
        # restart (the retained ones would queue at the broker behind the backlog that each phase drains).
        documents = kits_for(stream)
        (Path(tmp) / "registry.jsonl").write_bytes(b"".join(encode_document(d) + b"\n" for d in documents))
        del stream
        async with (
            Mosquitto(directory=Path(tmp) / "mosquitto") as broker,
            Influxd(directory=Path(tmp) / "influxd") as influx,
        ):
            await asyncio.to_thread(publish_registry, broker, documents)
            for run in range(repeat):
                if run % 2 == 0:
                    raw = await _phase_raw(broker, stream_file, run, messages)
                    ingest = await _phase_ingest(broker, influx, stream_file, run, messages, samples, max_points)
                else:
                    ingest = await _phase_ingest(broker, influx, stream_file, run, messages, samples, max_points)
                    raw = await _phase_raw(broker, stream_file, run, messages)
                runs.append({"raw": raw, "ingest": ingest, "ratio": ingest["msgs_per_s"] / raw["msgs_per_s"]})

    def median(phase: str, key: str) -> float:
        return round(float(statistics.median(r[phase][key] for r in runs)), 2)

    return {
        "samples_per_s": median("ingest", "samples_per_s"),
        "msgs_per_s": median("ingest", "msgs_per_s"),
        "raw_subscriber_msgs_per_s": median("raw", "msgs_per_s"),
        "ratio": round(statistics.median(r["ratio"] for r in runs), 3),
        "lost": max(int(r["ingest"]["lost"]) for r in runs),
        "cpu_us_per_sample": median("ingest", "cpu_us_per_sample"),
        "cpu_us_per_msg": median("ingest", "cpu_us_per_msg"),
        "raw_cpu_us_per_msg": median("raw", "cpu_us_per_msg"),
        "cpu_ratio": round(median("raw", "cpu_us_per_msg") / median("ingest", "cpu_us_per_msg"), 3),
        "rss_mb": round(max(r["ingest"]["rss_mb"] for r in runs), 1),
        "raw_rss_mb": round(max(r["raw"]["rss_mb"] for r in runs), 1),
        "messages": messages,
        "samples": samples,
        "patients": patients,
        "repeat": repeat,
        "batch_max_points": max_points,
        "cpus": os.cpu_count(),
        "load_avg_before": round(load_before, 2),
        "runs": [
            {
                "ratio": round(r["ratio"], 3),
                "raw": {k: round(v, 2) for k, v in r["raw"].items()},
                "ingest": {k: round(v, 2) for k, v in r["ingest"].items()},
            }
            for r in runs
        ],
    }


def _main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "publish":
        _child_publish(args[0], int(args[1]), args[2])
    elif mode == "raw":
        _child_raw(args[0], int(args[1]), args[2], int(args[3]))
    elif mode == "ingest":
        _child_ingest(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown bench child mode {mode!r}")


if __name__ == "__main__":
    _main(sys.argv[1:])
