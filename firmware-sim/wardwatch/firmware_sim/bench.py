"""Benchmarks (print JSON, never assert): render throughput and live devices sustained per process."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from pathlib import Path
from typing import Any

import numpy as np
from bleak.exc import BleakError

from wardwatch.core.gatt import HEART_RATE_MEASUREMENT, PLX_CONTINUOUS_MEASUREMENT, sig_uuid

from .bleak_backend import BumbleBleakClient, BumbleCentral
from .model import simulate
from .radio import SimRadio
from .render import render
from .runner import running_scenario
from .scenario import Scenario, load_scenario, scenario_from_dict

__all__ = ["bench_live", "bench_recordings", "bench_render", "synthetic_ward"]


def synthetic_ward(devices: int, duration_s: float, seed: int = 0) -> Scenario:
    """``devices`` devices (straps and oximeters alternating), one patient per pair, no faults."""
    patients: list[dict[str, Any]] = []
    for i in range(0, devices, 2):
        devs = [{"kind": "heart_rate_strap", "id": f"hrs-b{i:04d}"}]
        if i + 1 < devices:
            devs.append({"kind": "pulse_oximeter", "id": f"plx-b{i + 1:04d}"})
        patients.append({"id": f"p-b{i // 2:04d}", "devices": devs})
    return scenario_from_dict({"name": "bench", "seed": seed, "duration": duration_s, "patients": patients})


def bench_render(scenario: str = "ward", repeat: int = 3) -> dict[str, Any]:
    """Samples/s of ``simulate`` + ``render`` (best of ``repeat``), output discarded."""
    loaded = load_scenario(scenario)
    best = float("inf")
    samples = messages = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        tracks = simulate(loaded)
        stats = render(loaded, tracks, io.BytesIO())
        best = min(best, time.perf_counter() - t0)
        samples, messages = stats.samples, stats.messages
    return {
        "scenario": scenario,
        "simulated_hours": round(loaded.duration * len(loaded.devices()) / 3600, 2),
        "samples": samples,
        "messages": messages,
        "render_seconds": round(best, 3),
        "render_samples_per_s": round(samples / best),
        "render_messages_per_s": round(messages / best),
    }


def bench_recordings(directory: Path, *, until_s: float = 300.0) -> dict[str, Any]:
    """Seconds per record of the causal device model (read, detect, report, render) on ``directory``'s WFDB records."""
    from .recordings import WfdbRecordingModel, read_wfdb

    model = WfdbRecordingModel()
    headers = sorted(directory.rglob("*.hea"))
    reads: list[float] = []
    renders: list[float] = []
    messages = 0
    for header in headers:
        t0 = time.perf_counter()
        read_wfdb(header)
        t1 = time.perf_counter()
        messages += len(model.render_record(header, until_s=until_s))
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        renders.append(t2 - t1 - (t1 - t0))  # render_record reads the record again
    if not headers:
        return {"records": 0}
    return {
        "records": len(headers),
        "until_s": until_s,
        "messages": messages,
        "total_seconds": round(sum(reads) + sum(renders), 3),
        "read_seconds_median": round(float(np.median(reads)), 4),
        "model_seconds_median": round(float(np.median(renders)), 4),
        "model_seconds_max": round(float(np.max(renders)), 4),
    }


async def _live_step(devices: int, seconds: float, connect_timeout: float) -> dict[str, Any]:
    radio = SimRadio()
    scenario = synthetic_ward(devices, seconds + 2)
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    received: dict[str, int] = {}
    connect_failures = 0
    go = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        central = await stack.enter_async_context(BumbleCentral(radio))
        live = await stack.enter_async_context(
            running_scenario(scenario, radio, speed=1.0, go=go, advertising_interval_ms=200)
        )
        connect_started = time.perf_counter()
        for did, device in live.devices.items():
            client = BumbleBleakClient(device.address, bumble_central=central, timeout=connect_timeout)
            try:
                await client.connect(False)
            except (TimeoutError, BleakError):
                connect_failures += 1
                continue
            stack.push_async_callback(client.disconnect)
            received[did] = 0
            uuid16 = HEART_RATE_MEASUREMENT if did.startswith("hrs") else PLX_CONTINUOUS_MEASUREMENT
            assert client.services is not None
            char = client.services.get_characteristic(sig_uuid(uuid16))
            assert char is not None

            def on_value(_data: bytearray, did: str = did) -> None:
                i = received[did]
                received[did] = i + 1
                lags.append(loop.time() - (live.t0 + i + 1))

            await client.start_notify(char, on_value)
        connect_s = time.perf_counter() - connect_started
        go.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds + 5):
                await live.done.wait()
        expected = sum(track.seconds for track in live.tracks if track.device.id in received)
    arr = np.asarray(lags) if lags else np.zeros(1)
    return {
        "devices": devices,
        "connect_all_s": round(connect_s, 2),
        "connect_failures": connect_failures,
        "notifications": int(sum(received.values())),
        "expected": expected,
        "delivered_ratio": round(sum(received.values()) / max(1, expected), 4),
        "lag_p50_s": round(float(np.percentile(arr, 50)), 4),
        "lag_p99_s": round(float(np.percentile(arr, 99)), 4),
        "lag_max_s": round(float(arr.max()), 4),
    }


async def bench_live(
    counts: tuple[int, ...] = (10, 50, 100, 200, 400), seconds: float = 10.0, connect_timeout: float = 10.0
) -> dict[str, Any]:
    """Ramp the number of 1 Hz devices on one radio with a bleak-backend central receiving everything.

    A step is sustained when >= 99 % of notifications arrive and the 99th-percentile lag behind the
    schedule is under 1 s. The ramp stops at the first step that is not.
    """
    steps: list[dict[str, Any]] = []
    sustained = 0
    for n in counts:
        step = await _live_step(n, seconds, connect_timeout)
        step["sustained"] = (
            step["connect_failures"] == 0 and step["delivered_ratio"] >= 0.99 and step["lag_p99_s"] < 1.0
        )
        steps.append(step)
        if not step["sustained"]:
            break
        sustained = n
    return {"devices_sustained": sustained, "seconds_per_step": seconds, "steps": steps}
