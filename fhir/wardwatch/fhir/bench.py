"""``wardwatch bench fhir``: export a simulated ward through real mosquitto into the local FHIR server. Prints JSON.

Measures, per representation: Observations exported per second (first publish to last acknowledgement,
with the exporter, broker and Node server sharing this machine), and the cost per patient-day in
resources and bytes (request bytes of the transaction Bundles, and the stored JSON of the Observations).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from wardwatch.core.schema import Sample, Signal
from wardwatch.core.servers import Mosquitto
from wardwatch.core.waiting import wait_for
from wardwatch.fhir.client import FhirClient
from wardwatch.fhir.config import ExportSettings, FhirServerSettings
from wardwatch.fhir.exporter import Exporter
from wardwatch.fhir.mapping import BundleBuilder, Window
from wardwatch.fhir.testing import DEVICES, FhirTestServer, fhir_config, publish_all, vitals_stream

__all__ = ["main", "run_bench"]

DAY_S = 86_400
SERIES_PER_PATIENT = 4  # strap heart rate and RR, oximeter SpO2 and pulse rate


async def _one(
    broker: Mosquitto, directory: Path, representation: str, patients: int, seconds: int, interval_s: int
) -> dict[str, Any]:
    start = time.time_ns() // 1_000_000 - 2 * DAY_S * 1000
    start -= start % (interval_s * 1000)
    messages = vitals_stream(patients, seconds, start)
    async with FhirTestServer(directory=directory / representation) as server:
        config = fhir_config(broker, server, client_id=f"bench-{representation}", interval_s=interval_s,
                             representation=representation, receive_maximum=65_535)  # fmt: skip
        async with FhirClient(config.fhir) as client, Exporter(config, client) as exporter:
            await exporter.wait_ready(30)
            began = time.perf_counter()
            await asyncio.to_thread(publish_all, broker, messages, client_id=f"bench-pub-{representation}")
            await wait_for(lambda: exporter.metrics.value("messages_acked_total") >= len(messages), 600,
                           what="every message exported", max_interval=0.05)  # fmt: skip
            elapsed = time.perf_counter() - began
            metrics = exporter.metrics
            observations = int(metrics.value("observations_sent_total"))
            sent_bytes = metrics.value("bytes_sent_total")
            transactions = int(metrics.value("transactions_total", result="accepted"))
        stored = await server.search("Observation")
    stored_bytes = sum(len(msgspec.json.encode(o)) for o in stored)
    per_day = DAY_S / seconds / patients
    return {
        "representation": representation,
        "messages": len(messages),
        "observations": observations,
        "observations_stored": len(stored),
        "transactions": transactions,
        "seconds": round(elapsed, 3),
        "observations_per_s": round(observations / elapsed, 1),
        "messages_per_s": round(len(messages) / elapsed, 1),
        "per_patient_day": {
            "observations": round(observations * per_day),
            "resources": round(observations * per_day) + 3,  # + Patient and two sensor Devices, once
            "request_bytes": round(sent_bytes * per_day),
            "stored_observation_bytes": round(stored_bytes * per_day),
        },
    }


async def _direct(directory: Path, patients: int, windows_per_series: int, interval_s: int) -> dict[str, Any]:
    """Transactions alone (no MQTT): summary windows packed into Bundles and posted one after another."""
    start = time.time_ns() // 1_000_000 - 2 * DAY_S * 1000
    start -= start % (interval_s * 1000)
    settings = ExportSettings(interval_s=interval_s)
    windows = []
    for p in range(patients):
        for suffix, _role, signals in DEVICES:
            for signal in signals:
                for k in range(windows_per_series):
                    window = Window(
                        f"p-{p:03d}",
                        f"dev-{suffix}-{p:03d}",
                        "gw-01",
                        signal,
                        start + k * interval_s * 1000,
                        interval_s,
                    )
                    window.add(Sample(t=window.start, v=1.0 if signal is Signal.RR_INTERVAL else 70.0))
                    windows.append(window)
    bundles = []
    while windows:  # Patient + sensor + gateway + 5 Observations of one device = 8 entries
        builder = BundleBuilder(settings)
        first = windows[0]
        while windows and len(builder) < 8 and (windows[0].patient, windows[0].device) == (first.patient, first.device):
            builder.window(windows.pop(0))
        bundles.append(builder.bundle())
    async with (
        FhirTestServer(directory=directory / "direct") as server,
        FhirClient(FhirServerSettings(url=server.url)) as client,
    ):
        began = time.perf_counter()
        observations = 0
        for bundle in bundles:
            result = await client.transaction(bundle)
            if not result.accepted:
                raise RuntimeError(f"the server refused a benchmark Bundle: {result.outcome_text}")
            observations += sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation")
        elapsed = time.perf_counter() - began
    return {"transactions": len(bundles), "observations": observations, "seconds": round(elapsed, 3),
            "observations_per_s": round(observations / elapsed, 1)}  # fmt: skip


async def run_bench(patients: int, seconds: int, interval_s: int, representations: list[str]) -> dict[str, Any]:
    """Run each representation once on a fresh FHIR server; the broker is shared."""
    with tempfile.TemporaryDirectory(prefix="wardwatch-bench-fhir-") as tmp:
        async with Mosquitto(directory=Path(tmp) / "mosquitto") as broker:
            runs = [await _one(broker, Path(tmp), r, patients, seconds, interval_s) for r in representations]
        direct = await _direct(Path(tmp), patients, max(1, seconds // interval_s), interval_s)
    return {
        "patients": patients,
        "seconds_of_data": seconds,
        "interval_s": interval_s,
        "signals_per_patient": SERIES_PER_PATIENT,
        "server": "Medplum fhir-router 4.5.2 in memory (fhir/testserver), loopback",
        "runs": runs,
        "transactions_only": direct,
    }


def main(argv: list[str]) -> int:
    """``wardwatch bench fhir [--patients N] [--seconds S] [--interval-s I]``."""
    parser = argparse.ArgumentParser(prog="wardwatch bench fhir", description=__doc__)
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=600, help="seconds of 1 Hz data per patient")
    parser.add_argument("--interval-s", type=int, default=60)
    parser.add_argument("--representation", action="append", choices=["summary", "sampled", "both"])
    args = parser.parse_args(argv)
    result = asyncio.run(
        run_bench(args.patients, args.seconds, args.interval_s, args.representation or ["summary", "sampled"])
    )
    print(json.dumps(result, indent=2))
    return 0
