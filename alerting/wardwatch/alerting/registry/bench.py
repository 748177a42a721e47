"""Cost of the registry on the alarm path; prints JSON.

``python -m wardwatch.alerting.registry.bench [--patients 1000] [--per-gateway 100] [--rounds 100]``:
admits the patients with a strap and an oximeter each (timed), then runs the provenance gate over one
SpO2 message per patient, ``rounds`` times, and reports microseconds per message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from wardwatch.alerting.app import open_store
from wardwatch.alerting.registry.provenance import ProvenanceGate
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.testing import admit_with_kit, bench_config
from wardwatch.core.schema import Sample, Signal, Vitals
from wardwatch.core.topics import parse_topic, vitals_topic

WARD = "ward-a"


async def measure(patients: int, per_gateway: int, rounds: int) -> dict[str, Any]:
    """The figures (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="wardwatch-registry-bench-") as tmp:
        config = bench_config(Path(tmp) / "alerting.db", WARD)
        with open_store(config) as store:
            service = AlarmService(config, store)
            started = time.perf_counter()
            for i in range(patients):
                devices = {f"hr-{i:05d}": "heart_rate_strap", f"ox-{i:05d}": "pulse_oximeter"}
                gateway = f"gw-{i // per_gateway:03d}"
                await admit_with_kit(service.registry, f"p-{i:05d}", gateway, devices, capacity=2 * per_gateway)
            enrol_s = time.perf_counter() - started
            gate = ProvenanceGate(service, service.registry, lambda topic, payload, reason: None)
            now = time.time_ns() // 1_000_000
            messages = []
            for i in range(patients):
                gateway = f"gw-{i // per_gateway:03d}"
                vitals = Vitals(
                    patient=f"p-{i:05d}",
                    device=f"ox-{i:05d}",
                    gateway=gateway,
                    signal=Signal.SPO2,
                    seq=1,
                    samples=(Sample(t=now, v=97.0),),
                )
                topic = vitals_topic(WARD, gateway, vitals.patient, vitals.device, "spo2")
                messages.append((topic, parse_topic(topic), vitals))
            started = time.perf_counter()
            for _ in range(rounds):
                for topic, parts, vitals in messages:
                    if gate.vitals(topic, b"", parts, vitals) is None:
                        raise AssertionError(f"a bound patient's message was refused: {topic}")
            gate_s = time.perf_counter() - started
    return {
        "benchmark": "registry",
        "patients": patients,
        "devices_per_gateway": 2 * per_gateway,
        "admit_and_assign_s": round(enrol_s, 2),
        "admit_and_assign_ms_per_patient": round(1000 * enrol_s / patients, 2),
        "gate_messages": rounds * patients,
        "gate_us_per_message": round(1e6 * gate_s / (rounds * patients), 2),
    }


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--per-gateway", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.patients, args.per_gateway, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
