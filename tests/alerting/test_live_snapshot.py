"""The live board's snapshot when many consoles (re)connect at once: built once, and never stale.

Twenty consoles reconnecting together (after a network blip or a console restart) used to make the alarm
service build and encode the whole ward's board twenty times in a row on its event loop; now watchers that
subscribe before the next flush or alarm change share one encoded snapshot, and still miss nothing.
"""

from __future__ import annotations

import json
from typing import Any

from wardwatch.alerting.live import LiveBoard, Subscription
from wardwatch.alerting.manager import AlarmRecord
from wardwatch.alerting.testing import open_alarm_record
from wardwatch.core.schema import SCHEMA_VERSION, Sample, Signal, Vitals

T0 = 1_700_000_000_000
WARD = "ward-a"


def _vitals(patient: str, value: float, t: int) -> Vitals:
    return Vitals(
        v=SCHEMA_VERSION,
        patient=patient,
        device=f"{patient}-ox",
        gateway="gw-1",
        signal=Signal.SPO2,
        seq=1,
        samples=(Sample(t=t, v=value),),
    )


def _alarm(patient: str) -> AlarmRecord:
    return open_alarm_record(WARD, patient, T0)


class _Alarms:
    """The open alarms the board reads for a snapshot, counting how often it is asked."""

    def __init__(self) -> None:
        self.open: list[AlarmRecord] = []
        self.reads = 0

    def __call__(self) -> list[AlarmRecord]:
        self.reads += 1
        return list(self.open)


def _events(subscription: Subscription) -> list[tuple[str, Any]]:
    """What the subscription has waiting, parsed (event name, data)."""
    found = []
    for chunk in list(subscription._events):
        head, data = chunk.decode().split("\n", 1)
        found.append((head.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return found


async def test_consoles_reconnecting_together_share_one_snapshot() -> None:
    alarms = _Alarms()
    board = LiveBoard([WARD], alarms, now_ms=lambda: T0, flush_s=3600)
    for i in range(50):
        board.on_vitals(WARD, _vitals(f"p-{i:03d}", 96, T0))
    first = board.subscribe(WARD)
    reads = alarms.reads
    storm = [board.subscribe(WARD) for _ in range(20)]
    assert alarms.reads == reads + 1  # the board was built once for the twenty, not twenty times
    expected = _events(first)
    assert all(_events(s) == expected for s in storm)
    assert len(expected[0][1]["patients"]) == 50


async def test_a_shared_snapshot_misses_no_reading_and_no_alarm() -> None:
    alarms = _Alarms()
    board = LiveBoard([WARD], alarms, now_ms=lambda: T0, flush_s=3600)
    board.on_vitals(WARD, _vitals("p-001", 96, T0))
    board.subscribe(WARD)
    board.subscribe(WARD)  # the shared snapshot is made here
    # a reading after it: a later watcher gets the old snapshot, and the reading with everyone's next values
    board.on_vitals(WARD, _vitals("p-001", 88, T0 + 1000))
    late = board.subscribe(WARD)
    assert _events(late)[0][1]["patients"][0]["vitals"]["spo2"]["value"] == 96
    board._flush()
    name, values = _events(late)[-1]
    assert name == "values"
    assert values["patients"][0]["vitals"]["spo2"]["value"] == 88
    # after the flush, a new watcher's snapshot is made anew with the reading
    after_flush = board.subscribe(WARD)
    assert _events(after_flush)[0][1]["patients"][0]["vitals"]["spo2"]["value"] == 88
    # an alarm change starts a new snapshot too: the next watcher sees the alarm
    alarms.open.append(_alarm("p-001"))
    board.on_alarms(alarms.open)
    after_alarm = board.subscribe(WARD)
    assert [a["alarm_id"] for a in _events(after_alarm)[0][1]["alarms"]] == ["a-p-001"]


async def test_no_snapshot_is_reused_across_a_time_without_watchers() -> None:
    alarms = _Alarms()
    board = LiveBoard([WARD], alarms, now_ms=lambda: T0, flush_s=3600)
    board.on_vitals(WARD, _vitals("p-001", 96, T0))
    one, two = board.subscribe(WARD), board.subscribe(WARD)
    board.unsubscribe(one)
    board.unsubscribe(two)
    board.on_vitals(WARD, _vitals("p-001", 85, T0 + 1000))  # no watcher: no flush will carry this one
    again = board.subscribe(WARD)
    assert _events(again)[0][1]["patients"][0]["vitals"]["spo2"]["value"] == 85
