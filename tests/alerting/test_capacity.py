"""Gateway capacity (issue #18): one operator alarm per full gateway, no "no data" page per waiting device,
and "never connected" rather than "disconnected" for a device that never had a link."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from wardwatch.alerting.capacity import OVER_CAPACITY
from wardwatch.alerting.engine import RULES, Engine
from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import AlarmManager, SendPage
from wardwatch.alerting.settings import WardConfig
from wardwatch.core.schema import (
    AlarmCategory,
    DeviceLink,
    DeviceRole,
    DeviceStatus,
    GatewayStatus,
    Priority,
    Sample,
    Signal,
    Vitals,
)

T0 = 1_767_225_600_000
WARD = "ward-a"
GW = "gw-x"
# four patients, each a strap and an oximeter; the adapter has 6 slots: p-3's two devices wait
DEVICES = [
    (f"p-{n}", f"{kind}-{n}", role)
    for n in range(4)
    for kind, role in (("hrs", DeviceRole.HEART_RATE_STRAP), ("plx", DeviceRole.PULSE_OXIMETER))
]
WAITING = ("hrs-3", "plx-3")


def gateway_status(t: int, waiting: tuple[str, ...] = WAITING, slots: int = 6) -> GatewayStatus:
    links = tuple(
        DeviceLink(device=d, patient=p, role=r, connected=d not in waiting, never_connected=d in waiting)
        for p, d, r in DEVICES
    )
    return GatewayStatus(
        gateway=GW, ward=WARD, t=t, uptime_s=1.0, devices=links, connection_slots=slots, waiting_for_slot=waiting
    )


def device_status(t: int, device: str, *, connected: bool, reason: str | None) -> DeviceStatus:
    patient, _, role = next(x for x in DEVICES if x[1] == device)
    return DeviceStatus(patient=patient, device=device, gateway=GW, t=t, role=role, connected=connected, reason=reason)


def vitals(t: int, device: str, seq: int) -> Vitals:
    patient, _, role = next(x for x in DEVICES if x[1] == device)
    signal = Signal.HEART_RATE if role is DeviceRole.HEART_RATE_STRAP else Signal.PULSE_RATE
    return Vitals(patient=patient, device=device, gateway=GW, signal=signal, seq=seq, samples=(Sample(t=t, v=72.0),))


def run(engine: Engine, seconds: int, *, waiting: tuple[str, ...] = WAITING, start: int = T0) -> list[ConditionChange]:
    """``seconds`` of a gateway: status every 15 s (with device statuses), connected devices sending at 1 Hz."""
    out: list[ConditionChange] = []
    for s in range(seconds):
        t = start + s * 1000
        if s % 15 == 0:
            out += engine.on_gateway_status(gateway_status(t, waiting))
            for device in waiting:
                out += engine.on_device_status(
                    device_status(t, device, connected=False, reason="waiting_for_slot"), WARD
                )
        for _, device, _ in DEVICES:
            if device not in waiting:
                out += engine.on_vitals(vitals(t, device, s), WARD)
        out += engine.tick(t)
    return out


def test_a_full_gateway_raises_one_operator_alarm_and_no_device_silent() -> None:
    engine = Engine()
    changes = run(engine, 600)
    raised = [c for c in changes if c.active]
    assert [(c.patient, c.rule) for c in raised] == [(GW, OVER_CAPACITY)], raised
    (alarm,) = raised
    assert alarm.category is AlarmCategory.TECHNICAL
    assert alarm.priority is Priority.MEDIUM
    assert alarm.value == 2
    assert alarm.text.startswith("gateway gw-x over capacity: 2 devices not connected")
    assert "all 6 connection slots in use" in alarm.text
    assert RULES[OVER_CAPACITY][:2] == (AlarmCategory.TECHNICAL, Priority.MEDIUM)


def test_a_device_that_gets_a_slot_has_its_no_data_timer_restarted_and_the_alarm_clears() -> None:
    engine = Engine()
    run(engine, 300)
    # p-3's devices get their slots (say p-2 left): the status lists nobody waiting; they stay silent
    released: list[ConditionChange] = []
    start = T0 + 300_000
    t = start
    released += engine.on_gateway_status(gateway_status(t, waiting=()))
    assert [(c.rule, c.active) for c in released] == [(OVER_CAPACITY, False)]
    for s in range(1, 59):
        released += engine.tick(start + s * 1000)
    assert not [c for c in released if c.active and c.patient == "p-3"], "no-data timer restarts at the slot"
    later = engine.tick(start + 61_000)
    silent = sorted(c.rule for c in later if c.active and c.patient == "p-3")
    assert silent == ["device_silent.heart_rate_strap", "device_silent.pulse_oximeter"]


def test_the_number_waiting_updates_the_one_alarm() -> None:
    engine = Engine()
    first = engine.on_gateway_status(gateway_status(T0, waiting=("hrs-3",)))
    again = engine.on_gateway_status(gateway_status(T0 + 15_000, waiting=("hrs-3",)))
    more = engine.on_gateway_status(gateway_status(T0 + 30_000, waiting=WAITING))
    assert [c.value for c in first] == [1.0]
    assert again == []  # nothing new: no event
    assert [(c.active, c.value) for c in more] == [(True, 2.0)]
    manager = AlarmManager({WARD: ward_policy(WARD, ward_config(operator=True))})
    actions = [a for c in first + more for a in manager.on_condition(c, c.t)]
    assert len(manager.open_alarms()) == 1
    assert len([a for a in actions if isinstance(a, SendPage)]) == 1


def test_never_connected_is_said_so_not_disconnected() -> None:
    engine = Engine()
    engine.on_gateway_status(gateway_status(T0, waiting=()))
    out = engine.on_device_status(device_status(T0, "hrs-0", connected=False, reason="never_connected"), WARD)
    out += engine.on_device_status(device_status(T0, "plx-0", connected=False, reason=None), WARD)
    for s in range(61):
        out += engine.tick(T0 + s * 1000)
    texts = sorted(c.text for c in out if c.active and c.patient == "p-0")
    assert texts == [
        "HR strap hrs-0: no data for 60 s (never connected)",
        "pulse oximeter plx-0: no data for 60 s (disconnected)",
    ]


def ward_config(*, operator: bool | str, **extra: Any) -> WardConfig:
    destinations = {name: {"channels": [{"type": "mqtt"}]} for name in ("primary-nurse", "charge-desk", "operator")}
    data: dict[str, Any] = {
        "destinations": destinations,
        "escalation": {"high": {"steps": [{"destination": "primary-nurse", "timeout_s": 60}]}},
        "failsafe": "charge-desk",
        **extra,
    }
    if operator:
        data["operator"] = operator if isinstance(operator, str) else "operator"
        data["operator_timeout_s"] = 600
    return msgspec.convert(data, WardConfig)


def test_the_operator_is_paged_then_the_failsafe_and_nurses_never() -> None:
    engine = Engine()
    (alarm,) = engine.on_gateway_status(gateway_status(T0))
    manager = AlarmManager({WARD: ward_policy(WARD, ward_config(operator=True))})
    first = manager.on_condition(alarm, T0)
    later = manager.tick(T0 + 600_000)
    pages = [
        (a.page.destination, a.page.step, a.page.patient, a.page.text) for a in first + later if isinstance(a, SendPage)
    ]
    assert [p[:3] for p in pages] == [("operator", 0, GW), ("charge-desk", 1, GW)]
    assert pages[0][3].startswith("gateway gw-x over capacity: 2 devices not connected")
    # a physiological medium alarm still follows the nurses' escalation
    nurse = manager.on_condition(
        ConditionChange("p-0", WARD, "hr_high", AlarmCategory.PHYSIOLOGICAL, Priority.MEDIUM, True, T0, 140.0, "HR"),
        T0,
    )
    assert [a.page.destination for a in nurse if isinstance(a, SendPage)] == ["primary-nurse"]


def test_without_an_operator_the_alarm_follows_its_priority_and_an_unknown_operator_is_refused() -> None:
    (alarm,) = Engine().on_gateway_status(gateway_status(T0))
    manager = AlarmManager({WARD: ward_policy(WARD, ward_config(operator=False))})
    assert [a.page.destination for a in manager.on_condition(alarm, T0) if isinstance(a, SendPage)] == ["primary-nurse"]
    with pytest.raises(msgspec.ValidationError, match="operator destination 'nobody'"):
        ward_config(operator="nobody")


def test_after_a_restart_the_first_status_without_waiting_clears_a_restored_alarm() -> None:
    manager = AlarmManager({WARD: ward_policy(WARD, ward_config(operator=True, reopen_window_s=0))})
    (raised,) = Engine().on_gateway_status(gateway_status(T0))
    manager.on_condition(raised, T0)
    restored = AlarmManager({WARD: ward_policy(WARD, ward_config(operator=True, reopen_window_s=0))})
    restored.restore(manager.open_alarms())  # alerting restarted: the alarm is back, the engine knows nothing
    fresh = Engine()
    (cleared,) = fresh.on_gateway_status(gateway_status(T0 + 60_000, waiting=()))
    assert (cleared.rule, cleared.active) == (OVER_CAPACITY, False)
    restored.on_condition(cleared, cleared.t)
    assert restored.open_alarms() == []
    # later statuses without waiting devices say nothing more
    assert fresh.on_gateway_status(gateway_status(T0 + 75_000, waiting=())) == []
