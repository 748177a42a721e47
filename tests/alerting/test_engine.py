"""Unit tests of the alarm engine's rules, quality gating, technical alarms and alarm hygiene."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import pytest

from wardwatch.alerting.engine import RULES, Engine
from wardwatch.alerting.engine._filters import Hampel, quality_class
from wardwatch.alerting.engine.news2 import PARTIAL_TEXT, o2_points, partial_news2, pulse_points, spo2_points
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import (
    AbsentReason,
    AlarmCategory,
    DataGap,
    DeviceRole,
    DeviceStatus,
    News2,
    Priority,
    Quality,
    Sample,
    Signal,
    Vitals,
)

T0 = 1_767_225_600_000
WARD = "ward-a"
_seq = itertools.count(1)
DEVICE = {Signal.HEART_RATE: "hrs-1", Signal.SPO2: "plx-1", Signal.PULSE_RATE: "plx-1", Signal.BATTERY: "plx-1"}


def vit(signal: Signal, t: int, v: float | None, q: tuple[Quality, ...] = (), patient: str = "p-1") -> Vitals:
    """One single-sample vitals message."""
    absent = AbsentReason.UNAVAILABLE if v is None else None
    return Vitals(
        patient=patient,
        device=DEVICE[signal],
        gateway="gw-1",
        signal=signal,
        seq=next(_seq),
        samples=(Sample(t=t, v=v, q=q, absent=absent),),
    )


def feed(engine: Engine, messages: Iterable[Vitals], tick: bool = False) -> list[ConditionChange]:
    """Feed messages (optionally ticking each second) and flush the flap window at the end."""
    out: list[ConditionChange] = []
    for msg in messages:
        if tick:
            out += engine.tick(msg.samples[0].t)
        out += engine.on_vitals(msg, WARD)
    return out + engine.flush()


def spo2_series(values: Iterable[float | None], start: int = T0, q: tuple[Quality, ...] = ()) -> list[Vitals]:
    """SpO2 at 1 Hz."""
    return [vit(Signal.SPO2, start + i * 1000, v, q) for i, v in enumerate(values)]


def hr_series(values: Iterable[float], start: int = T0, signal: Signal = Signal.HEART_RATE) -> list[Vitals]:
    """Heart rate (or pulse rate) at 1 Hz."""
    return [vit(signal, start + i * 1000, v) for i, v in enumerate(values)]


def actives(changes: Iterable[ConditionChange], rule: str | None = None) -> list[ConditionChange]:
    """Activations, optionally of one rule."""
    return [c for c in changes if c.active and (rule is None or c.rule == rule)]


def physiological(changes: Iterable[ConditionChange]) -> list[ConditionChange]:
    """Physiological activations."""
    return [c for c in changes if c.active and c.category is AlarmCategory.PHYSIOLOGICAL]


def no_news2() -> RuleSet:
    """Defaults without the NEWS2 and trend rules (to test one rule at a time)."""
    return RuleSet({"news2_enabled": False, "trend_enabled": False})


# --- SpO2 -------------------------------------------------------------------------------------


def test_spo2_low_raises_after_the_15_s_condition_delay() -> None:
    engine = Engine(no_news2())
    changes = feed(engine, spo2_series([96] * 10 + [94, 92, 90, 88] + [86] * 26))
    (alarm,) = actives(changes)
    assert alarm.rule == "spo2_low"
    assert alarm.priority is Priority.MEDIUM
    assert alarm.category is AlarmCategory.PHYSIOLOGICAL
    assert alarm.t == T0 + 28_000  # first sample below at +13 s, raised 15 s later
    assert alarm.text == "SpO2 86 % below 90 % for 15 s"


def test_an_abrupt_step_is_confirmed_by_the_artefact_filter_first() -> None:
    changes = feed(Engine(no_news2()), spo2_series([96] * 10 + [86] * 30))
    (alarm,) = actives(changes)
    # a 10-point jump is held as a possible artefact until 3 more samples confirm it, then it counts
    # from its first sample (+10 s): raised 15 s later
    assert alarm.t == T0 + 25_000


def test_brief_shallow_dip_does_not_alarm() -> None:
    engine = Engine(no_news2())
    assert (
        actives(feed(engine, spo2_series([96] * 10 + [87, 86, 86, 86, 87, 87, 86, 86, 87, 88, 88, 89] + [96] * 20)))
        == []
    )


def test_satseconds_raises_a_deep_dip_before_the_delay() -> None:
    engine = Engine(no_news2())
    changes = feed(engine, spo2_series([96] * 10 + [93, 90, 87, 84, 82] + [81] * 14 + [96] * 20))
    (alarm,) = actives(changes)
    assert alarm.rule == "spo2_low"
    assert "SatSeconds" in alarm.text
    assert alarm.t - (T0 + 12_000) < 15_000  # before the plain delay would have fired


def test_satseconds_budget_zero_switches_the_integral_off() -> None:
    engine = Engine(RuleSet({"news2_enabled": False, "satseconds_budget": 0}))
    changes = feed(engine, spo2_series([96] * 10 + [93, 90, 87, 84, 82] + [81] * 12 + [96] * 20))
    assert actives(changes) == []


def test_severe_bypass_is_immediate_on_a_deep_drop_and_high_priority() -> None:
    engine = Engine(no_news2())
    values = [96.0 - 2.5 * i for i in range(9)] + [74.0] * 20  # fast but not a single-sample jump
    changes = feed(engine, spo2_series(values))
    severe = actives(changes, "spo2_low_severe")
    assert len(severe) == 1
    assert severe[0].priority is Priority.HIGH
    first_below_80 = next(i for i, v in enumerate(values) if v < 80)
    assert severe[0].t <= T0 + (first_below_80 + 2) * 1000
    assert actives(changes, "spo2_low") == []  # one episode, one alarm: the severe one holds the milder back


def test_single_deep_glitch_is_rejected_as_artefact() -> None:
    engine = Engine(no_news2())
    changes = feed(engine, spo2_series([96] * 20 + [62] + [96] * 20))
    assert actives(changes) == []
    assert engine.stats.artefacts == 1


def test_sudden_real_step_is_accepted_after_the_hampel_window_turns() -> None:
    engine = Engine(no_news2())
    changes = feed(engine, spo2_series([97] * 20 + [75] * 20))
    severe = actives(changes, "spo2_low_severe")
    assert len(severe) == 1
    assert severe[0].t <= T0 + 26_000  # ~4 samples to convince the filter, then 2 consecutive


def test_spo2_clears_only_with_hysteresis() -> None:
    engine = Engine(RuleSet({"news2_enabled": False, "flap_window_s": 0}))
    changes = feed(engine, spo2_series([96] * 5 + [85] * 20 + [91] * 30 + [93] * 15))
    clears = [c for c in changes if not c.active]
    assert len(clears) == 1
    # 91 % (above the limit, below limit + 2) never clears; 93 % clears after 10 s
    assert clears[0].t == T0 + (5 + 20 + 30 + 10) * 1000
    assert clears[0].rule == "spo2_low"


def test_flagged_gap_restarts_the_delay() -> None:
    engine = Engine(no_news2())
    msgs = spo2_series([96] * 5 + [85] * 10)
    msgs += spo2_series([85] * 8, start=T0 + 15_000, q=(Quality.QUESTIONABLE,))
    msgs += spo2_series([85] * 10, start=T0 + 23_000)
    changes = feed(engine, msgs)
    # 10 s + 10 s of valid low values separated by 8 s without evidence: no 15 s stretch
    assert actives(changes, "spo2_low") == []


# --- pulse --------------------------------------------------------------------------------------


def test_hr_high_after_30_s() -> None:
    engine = Engine(no_news2())
    ramp = [80, 95, 110, 125, 135]  # first above 130 at +4 s
    changes = feed(engine, hr_series(ramp + [135 + i % 3 for i in range(40)]))
    (alarm,) = actives(changes)
    assert (alarm.rule, alarm.priority, alarm.t) == ("hr_high", Priority.MEDIUM, T0 + 34_000)


def test_hr_low_after_15_s_and_extreme_brady_high_priority() -> None:
    changes = feed(Engine(no_news2()), hr_series([70] * 5 + [60, 50, 42] + [38] * 20))
    (alarm,) = actives(changes)
    assert (alarm.rule, alarm.t) == ("hr_low", T0 + 23_000)

    changes = feed(Engine(no_news2()), hr_series([70, 65, 60, 55, 50, 45, 40, 36] + [32] * 20))
    severe = actives(changes, "hr_low_severe")
    assert len(severe) == 1
    assert severe[0].priority is Priority.HIGH
    assert severe[0].t == T0 + 13_000  # first < 35 at +8 s, 5 s delay
    assert actives(changes, "hr_low") == []  # held back by the severe alarm of the same episode


def test_oximeter_pulse_rate_is_used_when_no_strap_is_worn() -> None:
    changes = feed(Engine(no_news2()), hr_series([80] * 5 + [140] * 45, signal=Signal.PULSE_RATE))
    assert [c.rule for c in actives(changes)] == ["hr_high"]


# --- quality gating and cross-checking -----------------------------------------------------------


@pytest.mark.parametrize(
    "flag",
    [
        Quality.CONTACT_LOST,
        Quality.QUESTIONABLE,
        Quality.INVALID,
        Quality.LOW_PERFUSION,
        Quality.POOR_SIGNAL,
        Quality.SENSOR_UNCONNECTED,
        Quality.SENSOR_DISPLACED,
        Quality.EARLY_ESTIMATE,
        Quality.TEST_DATA,
    ],
)
def test_flagged_readings_never_raise_physiological_alarms(flag: Quality) -> None:
    engine = Engine()
    msgs = spo2_series([70] * 200, q=(flag,))
    msgs += [vit(Signal.HEART_RATE, T0 + i * 1000 + 500, 150, (flag,)) for i in range(200)]
    msgs.sort(key=lambda m: m.samples[0].t)
    assert physiological(feed(engine, msgs, tick=True)) == []


def test_benign_flags_do_not_gate() -> None:
    assert quality_class((Quality.FROM_STORAGE, Quality.DEVICE_CLOCK)) == 0
    changes = feed(Engine(no_news2()), spo2_series([96] * 5 + [85] * 20, q=(Quality.DEVICE_CLOCK,)))
    assert [c.rule for c in actives(changes)] == ["spo2_low"]


def test_sensor_off_raises_a_technical_alarm_not_a_physiological_one() -> None:
    engine = Engine()
    msgs = spo2_series([96] * 10)
    msgs += spo2_series([None] * 60, start=T0 + 10_000, q=(Quality.SENSOR_UNCONNECTED,))
    msgs += spo2_series([96] * 20, start=T0 + 70_000)
    changes = feed(engine, msgs, tick=True)
    assert physiological(changes) == []
    (off,) = actives(changes)
    assert (off.rule, off.category, off.priority) == (
        "sensor_off.pulse_oximeter",
        AlarmCategory.TECHNICAL,
        Priority.MEDIUM,
    )
    assert off.t == T0 + 40_000
    (clear,) = [c for c in changes if not c.active]
    assert clear.t == T0 + 70_000


def test_absent_values_count_as_sensor_off() -> None:
    changes = feed(Engine(), spo2_series([96] * 5 + [None] * 40), tick=True)
    assert [c.rule for c in actives(changes)] == ["sensor_off.pulse_oximeter"]


def test_poor_signal_after_60_s_is_low_priority() -> None:
    changes = feed(
        Engine(), spo2_series([96] * 5) + spo2_series([95] * 70, start=T0 + 5000, q=(Quality.LOW_PERFUSION,))
    )
    (poor,) = actives(changes)
    assert (poor.rule, poor.priority, poor.t) == ("poor_signal.pulse_oximeter", Priority.LOW, T0 + 65_000)


def test_implausible_values_are_artefacts() -> None:
    engine = Engine(no_news2())
    assert actives(feed(engine, spo2_series([96] * 5 + [45] * 3 + [96] * 5))) == []
    assert engine.stats.artefacts == 3


def test_a_pulse_rate_above_the_ecg_is_motion_the_oximeter_is_doubtful() -> None:
    engine = Engine()
    msgs: list[Vitals] = []
    for i in range(120):
        t = T0 + i * 1000
        motion = i >= 10
        msgs.append(vit(Signal.HEART_RATE, t, 75))
        msgs.append(vit(Signal.PULSE_RATE, t + 10, 135 if motion else 76))
        msgs.append(vit(Signal.SPO2, t + 20, 84 if motion else 96))
    changes = feed(engine, msgs, tick=True)
    # the ECG stays the heart rate (no tachycardia from 135 /min); the PPG's SpO2 is withheld
    assert physiological(changes) == []
    assert engine.stats.doubtful > 0
    (doubt,) = actives(changes)
    assert (doubt.rule, doubt.category, doubt.priority) == ("signal_doubtful", AlarmCategory.TECHNICAL, Priority.LOW)


def test_a_persistent_pulse_deficit_is_shown_and_never_hides_a_desaturation() -> None:
    engine = Engine(no_news2())
    msgs: list[Vitals] = []
    for i in range(150):
        t = T0 + i * 1000
        msgs.append(vit(Signal.HEART_RATE, t, 110))
        msgs.append(vit(Signal.PULSE_RATE, t + 10, 62))  # atrial fibrillation: weak beats do not reach the finger
        msgs.append(vit(Signal.SPO2, t + 20, 96 if i < 30 else 85))
    changes = feed(engine, msgs, tick=True)
    deficit = actives(changes, "pulse_deficit")[0]
    assert (deficit.category, deficit.priority) == (AlarmCategory.PHYSIOLOGICAL, Priority.LOW)
    assert deficit.t == T0 + 60_010  # held for poor_signal_s
    assert "ECG HR 110 /min, oximeter pulse rate 62 /min" in deficit.text
    (desaturation,) = actives(changes, "spo2_low")
    assert desaturation.t == T0 + 60_020 + 15_000  # the SpO2 counts again once the gap is a finding
    assert actives(changes, "hr_low") == []


def test_oximeter_pulse_rate_is_the_source_only_without_a_strap_and_is_doubtful_after_a_gap() -> None:
    msgs = hr_series([80] * 5 + [125] * 3, signal=Signal.HEART_RATE)
    # the strap is taken off after 8 s: the oximeter's pulse rate (disagreeing at first) takes over
    msgs += [vit(Signal.PULSE_RATE, T0 + i * 1000 + 10, 150) for i in range(6, 60)]
    engine = Engine(no_news2())
    changes = feed(engine, sorted(msgs, key=lambda m: m.samples[0].t))
    (alarm,) = actives(changes, "hr_high")
    # the strap is the source until 5 s after its last HR (+7 s); the pulse rate was cross-checked until
    # then (last disagreement at +11.01 s) and stays doubtful 5 s longer: it counts from +16.01 s
    assert alarm.t == T0 + 16_010 + 30_000
    assert engine.stats.doubtful > 0


def test_agreeing_strap_and_oximeter_alarm_normally() -> None:
    msgs: list[Vitals] = []
    for i in range(60):
        t = T0 + i * 1000
        hr = 80 if i < 5 else 142
        msgs.append(vit(Signal.HEART_RATE, t, hr))
        msgs.append(vit(Signal.PULSE_RATE, t + 10, hr - 4))
    changes = feed(Engine(no_news2()), msgs)
    assert [c.rule for c in actives(changes)] == ["hr_high"]


def test_hampel_filter_flags_spikes_and_follows_steps() -> None:
    h = Hampel(7, 3.0, 4.0)
    assert all(h.accept(v) for v in [96, 97, 96, 95, 96, 97, 96])
    assert not h.accept(70)
    assert h.accept(96)
    decisions = [h.accept(80) for _ in range(6)]
    assert decisions[-1]  # a sustained step gets through once it fills half the window


def test_streaming_hampel_matches_a_vectorised_numpy_reference() -> None:
    rng = np.random.default_rng(7)
    raw = np.rint(96 + rng.normal(0, 1.2, 3000))
    raw[rng.integers(0, raw.size, 60)] -= rng.uniform(8, 40, 60).round()  # spikes
    raw[1500:1520] = 80  # a real step
    size, floor, k = 7, 4.0, 3.0 * 1.4826
    h = Hampel(size, 3.0, floor)
    streamed = np.array([h.accept(float(v)) for v in raw])
    windows = np.lib.stride_tricks.sliding_window_view(raw[:-1], size)  # the 7 values before each sample
    med = np.sort(windows, axis=1)[:, size // 2]
    mad = np.sort(np.abs(windows - med[:, None]), axis=1)[:, size // 2]
    x = raw[size:]
    outlier = (np.abs(x - med) > floor) & (np.abs(x - med) > k * mad)
    # the continuity escape needs the last accepted value: apply it sequentially on the vectorised verdicts
    expected = list(streamed[:size])
    last = next(float(raw[i]) for i in range(size - 1, -1, -1) if streamed[i])
    for value, is_outlier in zip(x, outlier, strict=True):
        ok = not is_outlier or abs(value - last) <= floor
        expected.append(ok)
        if ok:
            last = float(value)
    assert streamed.tolist() == expected
    assert 40 < (~streamed).sum() < 100


# --- NEWS2 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spo2", "scale", "on_o2", "points"),
    [
        (91, 1, False, 3),
        (92, 1, False, 2),
        (93, 1, False, 2),
        (94, 1, False, 1),
        (95, 1, False, 1),
        (96, 1, False, 0),
        (83, 2, False, 3),
        (84, 2, False, 2),
        (85, 2, True, 2),
        (86, 2, False, 1),
        (87, 2, True, 1),
        (88, 2, True, 0),
        (92, 2, True, 0),
        (93, 2, False, 0),
        (99, 2, False, 0),
        (93, 2, True, 1),
        (94, 2, True, 1),
        (95, 2, True, 2),
        (96, 2, True, 2),
        (97, 2, True, 3),
    ],
)
def test_news2_spo2_scales(spo2: float, scale: int, on_o2: bool, points: int) -> None:
    assert spo2_points(spo2, scale, on_o2) == points


@pytest.mark.parametrize(
    ("pulse", "points"), [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2), (130, 2), (131, 3)]
)
def test_news2_pulse(pulse: float, points: int) -> None:
    assert pulse_points(pulse) == points


def test_news2_aggregate_and_tiers() -> None:
    assert o2_points(True) == 2
    assert o2_points(False) == 0
    assert partial_news2(91, 115, 1, True).score == 7
    assert partial_news2(91, 115, 1, True).tier.startswith("high")
    assert partial_news2(94, 95, 1, True).score == 4
    assert partial_news2(91, 70).any_three
    assert partial_news2(91, 70).tier.startswith("low-medium")
    assert partial_news2(95, 115).tier.startswith("medium") is False
    assert partial_news2(None, 131).score == 3


def test_news2_urgent_on_a_single_three_is_partial_and_medium() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    msgs = spo2_series([91] * 300)  # at the limit: no spo2_low, but NEWS2 SpO2 scale 1 scores 3
    changes = feed(engine, msgs)
    (urgent,) = actives(changes)
    assert urgent.rule == "news2_urgent"
    assert urgent.priority is Priority.MEDIUM
    assert urgent.text.startswith(PARTIAL_TEXT)
    assert "urgent" in urgent.text


def test_news2_emergency_with_oxygen_is_high_priority() -> None:
    rules = RuleSet({"trend_enabled": False}).with_patient_override("p-1", supplemental_o2=True)
    msgs: list[Vitals] = []
    for i in range(300):
        msgs.append(vit(Signal.SPO2, T0 + i * 1000, 91))
        msgs.append(vit(Signal.HEART_RATE, T0 + i * 1000 + 1, 115))
    changes = feed(Engine(rules), msgs)
    emergency = actives(changes, "news2_emergency")
    assert len(emergency) == 1
    assert emergency[0].priority is Priority.HIGH
    assert emergency[0].value == 7
    assert "O2 (2)" in emergency[0].text
    # the sub-scores travel with the condition (to the Alarm message and the FHIR export), not only as text
    assert emergency[0].news2 == News2(
        score=7,
        o2=2,
        spo2_scale=1,
        spo2=3,
        pulse=2,
        missing=["respiration", "supplemental_o2", "systolic", "consciousness", "temperature"],
    )


def test_news2_scale_2_does_not_alarm_on_the_target_range() -> None:
    rules = RuleSet({"trend_enabled": False}).with_patient_override("p-1", spo2_low=85, news2_scale=2)
    assert actives(feed(Engine(rules), spo2_series([89] * 300))) == []
    assert [c.rule for c in actives(feed(Engine(RuleSet({"trend_enabled": False})), spo2_series([89] * 300)))] == [
        "spo2_low"
    ]


# --- trend --------------------------------------------------------------------------------------


def test_slow_spo2_drift_from_the_personal_baseline_raises_a_low_priority_trend() -> None:
    baseline_s = 100 * 60
    drift_s = 45 * 60
    values = [97.0 + (i % 3 - 1) * 0.5 for i in range(baseline_s)]
    values += [max(92.0, 97.0 - i / 120) for i in range(drift_s)]  # 5 points over 10 min, then held
    changes = feed(Engine(), spo2_series(values))
    (trend,) = actives(changes)
    assert (trend.rule, trend.priority, trend.category) == ("spo2_trend", Priority.LOW, AlarmCategory.PHYSIOLOGICAL)
    assert "baseline" in trend.text
    assert trend.t > T0 + (baseline_s + 15 * 60) * 1000  # a slow rule: not within minutes


def test_no_trend_without_enough_baseline() -> None:
    values = [97.0] * (20 * 60) + [92.0] * (40 * 60)
    assert actives(feed(Engine(), spo2_series(values)), "spo2_trend") == []


# --- technical ----------------------------------------------------------------------------------


def status(t: int, battery: int | None = None, connected: bool = True, reason: str | None = None) -> DeviceStatus:
    """A device status of the oximeter."""
    return DeviceStatus(
        patient="p-1",
        device="plx-1",
        gateway="gw-1",
        t=t,
        role=DeviceRole.PULSE_OXIMETER,
        connected=connected,
        battery=battery,
        reason=reason,
    )


def test_battery_low_then_critical() -> None:
    engine = Engine()
    out = engine.on_device_status(status(T0, 50), WARD)
    out += engine.on_device_status(status(T0 + 1000, 15), WARD)
    out += engine.on_device_status(status(T0 + 2000, 5), WARD)
    out += engine.on_device_status(status(T0 + 3000, 4), WARD)
    assert [(c.rule, c.priority) for c in actives(out)] == [
        ("battery_low.pulse_oximeter", Priority.LOW),
        ("battery_critical.pulse_oximeter", Priority.MEDIUM),
    ]
    out = engine.on_device_status(status(T0 + 4000, 95), WARD) + engine.flush()
    assert sorted(c.rule for c in out if not c.active) == [
        "battery_critical.pulse_oximeter",
        "battery_low.pulse_oximeter",
    ]


def test_battery_signal_feeds_the_battery_rule() -> None:
    changes = feed(Engine(), [vit(Signal.SPO2, T0, 97), vit(Signal.BATTERY, T0, 12)])
    assert [c.rule for c in actives(changes)] == ["battery_low.pulse_oximeter"]


def test_device_silent_deadman_via_tick() -> None:
    engine = Engine()
    out = engine.on_vitals(vit(Signal.SPO2, T0, 96), WARD)
    out += engine.on_device_status(status(T0 + 500, connected=False, reason="out_of_range"), WARD)
    out += engine.tick(T0 + 59_000)
    assert out == []
    out = engine.tick(T0 + 61_000)
    (silent,) = out
    assert (silent.rule, silent.priority, silent.t) == ("device_silent.pulse_oximeter", Priority.MEDIUM, T0 + 60_000)
    assert "out_of_range" in silent.text
    assert engine.tick(T0 + 70_000) == []  # deduplicated
    out = engine.on_vitals(vit(Signal.SPO2, T0 + 80_000, 96), WARD) + engine.flush()
    assert [(c.rule, c.active) for c in out] == [("device_silent.pulse_oximeter", False)]


def test_gateway_offline_pages_each_patient_once_and_suppresses_device_silence() -> None:
    engine = Engine()
    engine.on_vitals(vit(Signal.SPO2, T0, 96, patient="p-1"), WARD)
    engine.on_vitals(vit(Signal.SPO2, T0, 96, patient="p-2"), WARD)
    assert engine.on_gateway_availability(WARD, "gw-1", False, T0 + 1000) == []  # not yet: it may be a blip
    assert engine.tick(T0 + 60_999) == []
    out = engine.tick(T0 + 61_000)  # offline for gateway_offline_delay_s (60 s)
    assert [(c.patient, c.rule, c.priority, c.t) for c in out] == [
        ("p-1", "gateway_offline", Priority.MEDIUM, T0 + 61_000),
        ("p-2", "gateway_offline", Priority.MEDIUM, T0 + 61_000),
    ]
    assert engine.on_gateway_availability(WARD, "gw-1", False, T0 + 62_000) == []
    assert engine.tick(T0 + 600_000) == []  # no device_silent flood behind an offline gateway
    out = engine.on_gateway_availability(WARD, "gw-1", True, T0 + 700_000) + engine.flush()
    assert [(c.patient, c.active) for c in out] == [("p-1", False), ("p-2", False)]
    out = engine.tick(T0 + 761_000)  # silent again, counted from the gateway's return
    assert {c.rule for c in out} == {"device_silent.pulse_oximeter"}
    assert {c.t for c in out} == {T0 + 760_000}


def test_a_brief_gateway_outage_never_pages() -> None:
    """A broker restart publishes every gateway's last will; back within the delay, nobody is paged."""
    engine = Engine()
    engine.on_vitals(vit(Signal.SPO2, T0, 96, patient="p-1"), WARD)
    assert engine.on_gateway_availability(WARD, "gw-1", False, T0 + 1000) == []
    assert engine.tick(T0 + 30_000) == []
    assert engine.on_gateway_availability(WARD, "gw-1", True, T0 + 40_000) + engine.flush() == []
    assert engine.tick(T0 + 90_000) == []


def test_data_gap_is_low_priority_and_expires() -> None:
    engine = Engine()
    engine.on_vitals(vit(Signal.SPO2, T0, 96), WARD)
    gap = DataGap(gateway="gw-1", t=T0 + 5000, dropped=120, first_t=T0 - 120_000, last_t=T0)
    (raised,) = engine.on_data_gap(gap, WARD)
    assert (raised.rule, raised.priority, raised.category) == ("data_gap", Priority.LOW, AlarmCategory.TECHNICAL)
    assert "120 readings" in raised.text
    engine.on_vitals(vit(Signal.SPO2, T0 + 10_000, 96), WARD)
    out = [c for c in engine.tick(T0 + 305_000) + engine.flush() if c.rule == "data_gap"]
    assert [(c.active, c.t) for c in out] == [(False, T0 + 305_000)]


# --- late, duplicate, flap -------------------------------------------------------------------------


def test_duplicates_and_late_samples_are_dropped_and_counted() -> None:
    engine = Engine(no_news2())
    msgs = spo2_series([96] * 5 + [85] * 20)
    replayed = [*msgs[:10], msgs[9], *msgs[10:15], msgs[3], *msgs[15:]]  # one redelivery, one late sample
    changes = feed(engine, replayed)
    assert engine.stats.duplicates == 1
    assert engine.stats.late == 1
    assert changes == feed(Engine(no_news2()), msgs)


def test_flap_within_the_window_stays_one_alarm() -> None:
    engine = Engine(RuleSet({"news2_enabled": False, "spo2_reset_s": 2}))
    down, up = [94, 91, 88, 86], [88, 91, 94]
    values = [96] * 5 + down + [85] * 16 + up + [95] * 5 + down + [85] * 16 + up + [96] * 60
    changes = feed(engine, spo2_series(values))
    assert len(actives(changes)) == 1
    assert engine.stats.flaps_merged == 1
    assert len([c for c in changes if not c.active]) == 1


def test_flap_outside_the_window_is_a_new_alarm() -> None:
    engine = Engine(RuleSet({"news2_enabled": False, "spo2_reset_s": 2, "flap_window_s": 5}))
    down, up = [94, 91, 88, 86], [88, 91, 94]
    values = [96] * 5 + down + [85] * 16 + up + [95] * 20 + down + [85] * 16 + up + [96] * 60
    assert len(actives(feed(engine, spo2_series(values)))) == 2


# --- configuration at run time ----------------------------------------------------------------------


def test_patient_override_applies_to_a_running_engine() -> None:
    engine = Engine(no_news2())
    engine.on_vitals(vit(Signal.SPO2, T0, 96), WARD)
    engine.set_rules(engine.rules.with_patient_override("p-1", spo2_low=85))
    assert engine.thresholds(WARD, "p-1").spo2_low == 85
    assert actives(feed(engine, spo2_series([87] * 40, start=T0 + 1000))) == []


def test_active_and_discharge() -> None:
    engine = Engine(no_news2())
    feed(engine, spo2_series([96] * 5 + [85] * 20))
    assert [c.rule for c in engine.active()] == ["spo2_low"]
    (cleared,) = engine.discharge("p-1", T0 + 100_000)
    assert (cleared.rule, cleared.active) == ("spo2_low", False)
    assert engine.active() == []
    assert tuple(engine.patients()) == ()


def test_every_rule_has_category_and_priority() -> None:
    for name, (category, priority, inhibitors, releases) in RULES.items():
        assert isinstance(category, AlarmCategory)
        assert isinstance(priority, Priority)
        assert all(i in RULES for i in inhibitors), name
        assert releases is None or releases in RULES
