"""The live board during a recheck hold, and the gateways of admitted patients after a restart.

Before: a patient whose alarm was resolved by hand while the condition lasted showed "No open alarm"
(the snapshot had only open alarms), and a restarted board named no patient's gateway until the
gateway's next status message.
"""

from __future__ import annotations

from typing import Any

from wardwatch.alerting.live import LiveBoard
from wardwatch.alerting.registry.live_roster import connect_live_roster
from wardwatch.alerting.registry.registry import DeviceSpec
from wardwatch.core.schema import DeviceRole

from .test_live_stream import Live, change, events, live, next_event

__all__ = ["live"]  # the fixture, imported for pytest


async def test_the_snapshot_and_stream_show_an_alarm_resolved_while_present_until_its_watch_ends(
    live: Live,
) -> None:
    live.service.on_conditions([change("p-1")])
    (record,) = live.service.manager.open_alarms()
    resolved = live.service.resolve(record.alarm_id, "ann", "called, feels fine")
    assert resolved.recheck_at is not None

    async def snapshot() -> dict[str, Any]:
        async with live.http.get(live.base + "/api/v1/wards/ward-a/live", headers=live.headers) as response:
            assert response.status == 200
            answer: dict[str, Any] = await response.json()
            return answer

    board = await snapshot()
    assert board["alarms"] == []
    (watched,) = board["watched"]
    assert (watched["alarm_id"], watched["state"], watched["actor"]) == (record.alarm_id, "resolved", "ann")
    assert watched["realarm_at"] == resolved.recheck_at
    async with live.http.get(live.base + "/api/v1/wards/ward-a/stream", headers=live.headers) as response:
        stream = events(response)
        first = await next_event(stream, "snapshot")
        assert [w["alarm_id"] for w in first["watched"]] == [record.alarm_id]
        live.service.on_conditions([change("p-1", active=False)])  # cleared within the hold: the watch ends
        ended = await next_event(stream, "alarm")
        assert (ended["alarm_id"], ended["state"], ended["realarm_at"]) == (record.alarm_id, "resolved", None)
    assert (await snapshot())["watched"] == []


async def test_a_restarted_board_names_the_gateway_of_each_admitted_patients_kit(live: Live) -> None:
    registry = live.service.registry
    await registry.register_gateway("ward-a", "gw-7", "", 7, "cat", "new home kit")
    kitted = await registry.admit("ward-a", "cat", "referral")
    await registry.assign_kit(
        kitted.patient, "gw-7", [DeviceSpec(id="plx-7", role=DeviceRole.PULSE_OXIMETER)], "cat", "kit"
    )
    waiting = await registry.admit("ward-a", "cat", "referral")  # no kit yet
    restarted = LiveBoard(["ward-a"], live.service.manager.open_alarms)
    connect_live_roster(registry, restarted)
    gateways = {p["patient"]: p["gateway"] for p in restarted.snapshot("ward-a")["patients"]}
    assert gateways == {kitted.patient: "gw-7", waiting.patient: None}
