"""What a console subscribing costs the alarm service's event loop: the live board's snapshot, built and encoded.

A ward of ``patients`` patients (five shown signals, two devices and a NEWS2 each) with ``alarms`` open alarms;
``watchers`` streams are open, so reading changes are flushed to them. Between two snapshots ``dirty``
patients change (a flush every 0.25 s at 1 Hz readings changes most of a ward, a quiet ward few of them).

Printed as JSON (milliseconds, medians of ``rounds``):

- ``snapshot_whole_ms``: the ``snapshot`` event encoded whole, as before pre-encoded patients;
- ``snapshot_ms``: the event as a subscription now makes it (kept patients' bytes joined, changed ones encoded);
- ``flush_ms``: one flush of the changed patients to all watchers (one encoding, whatever the watchers);
- ``snapshot_bytes``: the event's size.

Run: ``python -m wardwatch.alerting.bench_snapshot [--patients 1000 --alarms 1000 --dirty 100 --watchers 20]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from wardwatch.alerting.live import LiveBoard, sse_event
from wardwatch.alerting.manager import AlarmRecord
from wardwatch.alerting.testing import open_alarm_record
from wardwatch.core.schema import (
    SCHEMA_VERSION,
    DeviceRole,
    DeviceStatus,
    Sample,
    Signal,
    Vitals,
)

__all__ = ["measure"]

WARD = "ward-bench"
T0 = 1_700_000_000_000
_SIGNALS = {
    Signal.HEART_RATE: 80.0,
    Signal.SPO2: 97.0,
    Signal.PULSE_RATE: 81.0,
    Signal.PERFUSION_INDEX: 2.5,
    Signal.BATTERY: 90.0,
}


def _patient(i: int) -> str:
    return f"p{i:05d}"


def _alarm(i: int) -> AlarmRecord:
    return open_alarm_record(WARD, _patient(i), T0, alarm_id=f"a-{i}")


def _reading(board: LiveBoard, i: int, t: int) -> None:
    patient = _patient(i)
    for signal, value in _SIGNALS.items():
        vitals = Vitals(
            v=SCHEMA_VERSION,
            patient=patient,
            device=f"{patient}-ox",
            gateway=f"gw-{i // 10}",
            signal=signal,
            seq=t,
            samples=(Sample(t=t, v=value + t % 3),),
        )
        board.on_vitals(WARD, vitals)


def _timed_ms(action: Any) -> float:
    start = time.perf_counter_ns()
    action()
    return (time.perf_counter_ns() - start) / 1e6


async def measure(patients: int, alarms: int, dirty: int, watchers: int, rounds: int) -> dict[str, Any]:
    """The figures described in the module."""
    open_alarms = [_alarm(i) for i in range(alarms)]
    board = LiveBoard([WARD], lambda: open_alarms, flush_s=3600.0, buffer=rounds * 4 + 8)
    state = board._wards[WARD]
    for i in range(patients):
        _reading(board, i, T0)
        for role in (DeviceRole.HEART_RATE_STRAP, DeviceRole.PULSE_OXIMETER):
            status = DeviceStatus(
                v=SCHEMA_VERSION,
                patient=_patient(i),
                device=f"{_patient(i)}-{role.value}",
                gateway=f"gw-{i // 10}",
                role=role,
                connected=True,
                battery=90,
                t=T0,
            )
            board.on_device_status(WARD, status)
        board.on_news2(WARD, _patient(i), {"score": 1, "band": "low", "complete": False})
    subscriptions = [board.subscribe(WARD) for _ in range(watchers)]
    board._flush()
    whole, joined, flushes, size = [], [], [], 0
    for r in range(rounds):
        for k in range(dirty):
            _reading(board, (r * dirty + k) % patients, T0 + 1000 * (r + 1))
        whole.append(_timed_ms(lambda: sse_event("snapshot", board.snapshot(WARD))))
        board._generation += 1  # as after an alarm change: the shared snapshot is not reused

        def subscribe() -> None:
            nonlocal size
            subscription = board.subscribe(WARD)
            size = len(subscription._events[0])
            board.unsubscribe(subscription)

        joined.append(_timed_ms(subscribe))
        flushes.append(_timed_ms(board._flush))
        for subscription in subscriptions:
            subscription._events.clear()
    if state.subscribers != set(subscriptions):
        raise RuntimeError("a watcher was cut off during the benchmark: raise its buffer")
    board.close()
    return {
        "patients": patients,
        "alarms": alarms,
        "dirty": dirty,
        "watchers": watchers,
        "rounds": rounds,
        "snapshot_whole_ms": round(statistics.median(whole), 3),
        "snapshot_ms": round(statistics.median(joined), 3),
        "flush_ms": round(statistics.median(flushes), 3),
        "snapshot_bytes": size,
    }


def main() -> None:
    """``python -m wardwatch.alerting.bench_snapshot``: print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=1000)
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--dirty", type=int, default=100, help="patients changed between two snapshots")
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=31)
    args = parser.parse_args()
    figures = asyncio.run(measure(args.patients, args.alarms, args.dirty, args.watchers, args.rounds))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
