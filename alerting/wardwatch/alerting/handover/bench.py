"""Cost of the handover's records and report; prints JSON.

``python -m wardwatch.alerting.handover.bench [--patients 300] [--alarms 2000] [--notes 500] [--hours 12]``:
admits the patients with a kit each, raises ``alarms`` alarms over the window (a third acknowledged then
resolved, a third silenced, a third left open or cleared), writes ``notes`` review notes, fills the NEWS2
log with a worst case (every patient's score changing every minute for ``hours``), then times the device
history's writes (one link transition per message) and the handover report (20 rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from wardwatch.alerting.app import open_store
from wardwatch.alerting.engine.news2 import News2Score, Param
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.handover.report import handover
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.testing import admit_with_kit, bench_config
from wardwatch.core.schema import AlarmCategory, DeviceRole, DeviceStatus, Priority

WARD = "ward-a"


async def measure(patients: int, alarms: int, notes: int, hours: int) -> dict[str, Any]:
    """The figures (see the module docstring)."""
    with (
        tempfile.TemporaryDirectory(prefix="wardwatch-handover-bench-") as tmp,
        open_store(config := bench_config(Path(tmp) / "alerting.db", WARD)) as store,
    ):
        service = AlarmService(config, store)
        ids = [f"p-{i:05d}" for i in range(patients)]
        for i, patient in enumerate(ids):
            devices = {f"ox-{i:05d}": "pulse_oximeter"}
            await admit_with_kit(service.registry, patient, f"gw-{i // 50:03d}", devices, capacity=100)
        now = service.clock.now_ms()
        for n in range(alarms):
            patient = ids[n % patients]
            change = ConditionChange(
                patient=patient,
                ward=WARD,
                rule=f"rule_{n}",
                category=AlarmCategory.PHYSIOLOGICAL,
                priority=Priority.MEDIUM,
                active=True,
                t=now,
                value=1.0,
                text="benchmark alarm",
            )
            service.on_conditions([change])
            alarm_id = next(r.alarm_id for r in service.manager.open_alarms() if r.rule == change.rule)
            if n % 3 == 0:
                service.acknowledge(alarm_id, "ann", "seen")
                service.resolve(alarm_id, "ann", "treated at home")
            elif n % 3 == 1:
                service.silence(alarm_id, "ann", "probe reseated", 10)
        for n in range(notes):
            service.handover.notes.write(ids[n % patients], f"review note {n}", "ann", "nurse")
        scores = dict.fromkeys(ids, 0)
        service.observations.score_source = lambda patient, t: News2Score(
            score=scores[patient], points={}, used={}, missing=(Param.RESPIRATION,), spo2_scale=1, t=t
        )
        started = time.perf_counter()
        minutes = hours * 60
        for minute in range(minutes):
            for i, patient in enumerate(ids):
                scores[patient] = (minute + i) % 7
            service.handover.scores.sample(now - (minutes - minute) * 60_000)
        log_s = time.perf_counter() - started
        log_rows = store.connection.execute("SELECT COUNT(*) FROM news2_log").fetchone()[0]

        history = service.handover.devices
        transitions = 2000
        started = time.perf_counter()
        for n in range(transitions):
            i = n % patients
            status = DeviceStatus(
                patient=ids[i],
                device=f"ox-{i:05d}",
                gateway=f"gw-{i // 50:03d}",
                t=now,
                role=DeviceRole.PULSE_OXIMETER,
                connected=(n // patients) % 2 == 0,
                battery=80,
            )
            history.on_device_status(WARD, status)
        device_s = time.perf_counter() - started
        unchanged = msgspec.structs.replace(status, battery=79)
        started = time.perf_counter()
        for _ in range(transitions):
            history.on_device_status(WARD, unchanged)
        unchanged_s = time.perf_counter() - started

        timings = []
        for _ in range(20):
            started = time.perf_counter()
            report = handover(service, WARD, hours)
            timings.append(time.perf_counter() - started)
        size = len(msgspec.json.encode(report))
        timings.sort()
    return {
        "benchmark": "handover",
        "patients": patients,
        "alarms": alarms,
        "notes": notes,
        "hours": hours,
        "news2_log_rows": log_rows,
        "news2_log_sample_ms_per_round": round(1000 * log_s / minutes, 2),
        "device_transition_write_us": round(1e6 * device_s / transitions, 1),
        "device_status_unchanged_us": round(1e6 * unchanged_s / transitions, 1),
        "handover_ms_p50": round(1000 * statistics.median(timings), 1),
        "handover_ms_max": round(1000 * timings[-1], 1),
        "handover_bytes": size,
        "handover_alarms_listed": len(report["alarms"]),
        "handover_news2_rose": len(report["news2_rose"]),
        "handover_attention": len(report["attention"]),
    }


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--alarms", type=int, default=2000)
    parser.add_argument("--notes", type=int, default=500)
    parser.add_argument("--hours", type=int, default=12)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.patients, args.alarms, args.notes, args.hours)), indent=2))


if __name__ == "__main__":
    main()
