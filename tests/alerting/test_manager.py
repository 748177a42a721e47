"""The pure alarm manager: lifecycle, dedup, flap suppression, escalation, re-notification (time passed in)."""

from __future__ import annotations

import dataclasses

import msgspec
import pytest

from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import (
    Action,
    AlarmManager,
    AlarmNotFoundError,
    InvalidTransitionError,
    PublishAlarm,
    SendPage,
)
from wardwatch.alerting.settings import WardConfig
from wardwatch.core.schema import AlarmCategory, AlarmState, News2, Priority

T0 = 1_700_000_000_000

WARD = msgspec.convert(
    {
        "destinations": {
            "primary-nurse": {"channels": [{"type": "mqtt"}]},
            "charge-nurse": {"channels": [{"type": "mqtt"}]},
            "on-call-doctor": {"channels": [{"type": "mqtt"}]},
            "failsafe-desk": {"channels": [{"type": "mqtt"}]},
        },
        "escalation": {
            "high": {
                "steps": [
                    {"destination": "primary-nurse", "timeout_s": 60},
                    {"destination": "charge-nurse", "timeout_s": 60},
                    {"destination": "on-call-doctor", "timeout_s": 120},
                ],
                "ack_timeout_s": 300,
            }
        },
        "failsafe": "failsafe-desk",
        "reopen_window_s": 30,
        "notify_resolved": True,
    },
    WardConfig,
)


def manager() -> AlarmManager:
    return AlarmManager({"ward-a": ward_policy("ward-a", WARD)})


def change(active: bool, t: int, *, rule: str = "spo2_low", priority: Priority = Priority.HIGH) -> ConditionChange:
    return ConditionChange(
        patient="p-1",
        ward="ward-a",
        rule=rule,
        category=AlarmCategory.PHYSIOLOGICAL,
        priority=priority,
        active=active,
        t=t,
        value=84.0,
        text="SpO2 84 % below 90 %",
    )


def pages(actions: list[Action]) -> list[tuple[str, int]]:
    return [(a.page.destination, a.page.step) for a in actions if isinstance(a, SendPage)]


def states(actions: list[Action]) -> list[AlarmState]:
    return [a.alarm.state for a in actions if isinstance(a, PublishAlarm)]


def test_new_condition_opens_alarm_and_pages_first_step() -> None:
    m = manager()
    actions = m.on_condition(change(True, T0), T0)
    assert states(actions) == [AlarmState.ACTIVE]
    assert pages(actions) == [("primary-nurse", 0)]
    page = next(a.page for a in actions if isinstance(a, SendPage))
    assert page.page_id == f"{page.alarm_id}.r0.s0"
    assert page.patient == "p-1"
    assert "84" in page.text
    assert m.next_due() == T0 + 60_000


def test_the_partial_news2_of_a_condition_is_published_with_its_alarm() -> None:
    scored = News2(score=5, o2=0, spo2=3, pulse=2)
    urgent = dataclasses.replace(change(True, T0, rule="news2_urgent"), value=5.0, news2=scored)
    m = manager()
    (published,) = [a.alarm for a in m.on_condition(urgent, T0) if isinstance(a, PublishAlarm)]
    assert published.news2 == scored
    alarm_id = published.alarm_id
    (resolved,) = [a.alarm for a in m.resolve(alarm_id, "nurse-1", "seen", T0 + 1000) if isinstance(a, PublishAlarm)]
    assert resolved.news2 == scored


def test_escalation_steps_then_failsafe_then_nothing() -> None:
    m = manager()
    m.on_condition(change(True, T0), T0)
    assert m.tick(T0 + 59_999) == []
    assert pages(m.tick(T0 + 60_000)) == [("charge-nurse", 1)]
    assert pages(m.tick(T0 + 120_000)) == [("on-call-doctor", 2)]
    assert pages(m.tick(T0 + 200_000)) == []
    assert pages(m.tick(T0 + 240_000)) == [("failsafe-desk", 3)]
    assert m.next_due() is None
    assert m.tick(T0 + 10_000_000) == []


def test_acknowledge_stops_escalation_and_renotifies_after_timeout() -> None:
    m = manager()
    alarm_id = m.open_alarms()[0].alarm_id if m.open_alarms() else None
    assert alarm_id is None
    m.on_condition(change(True, T0), T0)
    alarm_id = m.open_alarms()[0].alarm_id
    assert states(m.acknowledge(alarm_id, "nurse-ann", "at bedside", T0 + 30_000)) == [AlarmState.ACKNOWLEDGED]
    assert m.tick(T0 + 200_000) == []  # no escalation after acknowledgement
    assert m.next_due() == T0 + 330_000
    actions = m.tick(T0 + 330_000)  # still active 5 min after acknowledgement: re-notify, new round
    assert states(actions) == [AlarmState.ACTIVE]
    assert pages(actions) == [("primary-nurse", 0)]
    assert next(a.page.page_id for a in actions if isinstance(a, SendPage)).endswith(".r1.s0")
    record = m.get(alarm_id)
    assert record is not None
    assert record.first_ack_at == T0 + 30_000


def test_duplicate_condition_is_deduplicated() -> None:
    m = manager()
    m.on_condition(change(True, T0), T0)
    assert m.on_condition(change(True, T0 + 1000), T0 + 1000) == []
    assert len(m.open_alarms()) == 1


def test_flap_within_reopen_window_stays_one_alarm() -> None:
    m = manager()
    m.on_condition(change(True, T0), T0)
    assert m.on_condition(change(False, T0 + 5000), T0 + 5000) == []
    assert m.tick(T0 + 20_000) == []
    assert m.on_condition(change(True, T0 + 25_000), T0 + 25_000) == []  # returns within 30 s
    record = m.open_alarms()[0]
    assert record.flaps == 1
    assert record.condition_active
    assert pages(m.tick(T0 + 60_000)) == [("charge-nurse", 1)]  # escalation continues


def test_clearing_resolves_after_window_and_notifies_paged_destinations() -> None:
    m = manager()
    m.on_condition(change(True, T0, priority=Priority.MEDIUM), T0)  # medium pages with the high policy here
    m.tick(T0 + 60_000)
    m.on_condition(change(False, T0 + 70_000, priority=Priority.MEDIUM), T0 + 70_000)
    assert m.tick(T0 + 99_999) == []  # escalation paused while cleared
    actions = m.tick(T0 + 100_000)
    assert states(actions) == [AlarmState.RESOLVED]
    resolved = [a.page for a in actions if isinstance(a, SendPage)]
    assert {p.destination for p in resolved} == {"primary-nurse", "charge-nurse"}
    assert all(p.state is AlarmState.RESOLVED for p in resolved)
    assert m.open_alarms() == []
    # a new onset after resolution is a new alarm
    assert pages(m.on_condition(change(True, T0 + 200_000), T0 + 200_000)) == [("primary-nurse", 0)]


def test_high_priority_alarm_latches_until_acknowledged() -> None:
    """IEC 60601-1-8: a high-priority alarm nobody saw stays active and escalates after its condition clears."""
    m = manager()
    m.on_condition(change(True, T0), T0)
    m.on_condition(change(False, T0 + 10_000), T0 + 10_000)  # a deep dip that is over before anyone looked
    assert m.tick(T0 + 50_000) == []  # past the reopen window: still not resolved
    assert [r.state for r in m.open_alarms()] == [AlarmState.ACTIVE]
    assert pages(m.tick(T0 + 60_000)) == [("charge-nurse", 1)]  # escalation goes on
    alarm_id = m.open_alarms()[0].alarm_id
    assert states(m.acknowledge(alarm_id, "nurse-ann", "saw the dip, patient fine", T0 + 70_000)) == [
        AlarmState.RESOLVED
    ]
    assert m.open_alarms() == []


def test_latching_can_be_turned_off_per_ward() -> None:
    m = AlarmManager({"ward-a": ward_policy("ward-a", msgspec.structs.replace(WARD, latch_high_priority=False))})
    m.on_condition(change(True, T0), T0)
    m.on_condition(change(False, T0 + 10_000), T0 + 10_000)
    assert states(m.tick(T0 + 40_000)) == [AlarmState.RESOLVED]


def test_silence_suppresses_pages_until_expiry() -> None:
    m = manager()
    m.on_condition(change(True, T0), T0)
    alarm_id = m.open_alarms()[0].alarm_id
    m.silence(alarm_id, "nurse-ann", "repositioning probe", T0 + 600_000, T0 + 10_000)
    assert m.tick(T0 + 599_999) == []
    actions = m.tick(T0 + 600_000)
    assert states(actions) == [AlarmState.ACTIVE]
    assert pages(actions) == [("primary-nurse", 0)]
    with pytest.raises(InvalidTransitionError):
        m.silence(alarm_id, "nurse-ann", "too long", T0 + 100_000_000, T0 + 600_000)


def test_manual_resolve_and_unknown_alarm() -> None:
    m = manager()
    m.on_condition(change(True, T0), T0)
    alarm_id = m.open_alarms()[0].alarm_id
    assert states(m.resolve(alarm_id, "dr-bo", "probe off finger", T0 + 1)) == [AlarmState.RESOLVED]
    with pytest.raises(AlarmNotFoundError):
        m.acknowledge(alarm_id, "nurse-ann", "late", T0 + 2)


def test_delivery_failure_pages_failsafe_once() -> None:
    m = manager()
    first = next(a.page for a in m.on_condition(change(True, T0), T0) if isinstance(a, SendPage))
    assert pages(m.on_delivery_failed(first, T0 + 5000)) == [("failsafe-desk", 3)]
    assert m.on_delivery_failed(first, T0 + 6000) == []
    assert m.is_page_wanted(first)


def test_low_priority_is_not_paged_and_medium_uses_high_policy() -> None:
    m = manager()
    assert pages(m.on_condition(change(True, T0, rule="battery_low", priority=Priority.LOW), T0)) == []
    assert pages(m.on_condition(change(True, T0, rule="hr_high", priority=Priority.MEDIUM), T0)) == [
        ("primary-nurse", 0)
    ]


def test_restore_resumes_timers() -> None:
    m = manager()
    m.on_condition(change(True, T0), T0)
    saved = m.take_dirty()
    restored = manager()
    restored.restore(saved)
    assert restored.next_due() == T0 + 60_000
    assert pages(restored.tick(T0 + 60_000)) == [("charge-nurse", 1)]


def test_acknowledged_page_is_no_longer_wanted() -> None:
    m = manager()
    page = next(a.page for a in m.on_condition(change(True, T0), T0) if isinstance(a, SendPage))
    m.acknowledge(page.alarm_id, "nurse-ann", "seen", T0 + 1)
    assert not m.is_page_wanted(page)
