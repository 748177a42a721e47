"""Spot-check rules: hypotension, fever, hypothermia (quality-gated) and NEWS2 with BP and temperature."""

from __future__ import annotations

import itertools

import pytest

from wardwatch.alerting.engine import RULES, Engine
from wardwatch.alerting.engine.news2 import partial_news2, systolic_points, temperature_points
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet, validate_overrides
from wardwatch.core.errors import ConfigError
from wardwatch.core.schema import AlarmCategory, DeviceRole, DeviceStatus, Priority, Quality, Sample, Signal, Vitals

T0 = 1_767_225_600_000
WARD = "ward-a"
_seq = itertools.count(1)
DEVICE = {
    Signal.SYSTOLIC_BP: "bpc-1",
    Signal.DIASTOLIC_BP: "bpc-1",
    Signal.MEAN_ARTERIAL_PRESSURE: "bpc-1",
    Signal.BODY_TEMPERATURE: "thm-1",
    Signal.SPO2: "plx-1",
}


def vit(signal: Signal, t: int, v: float, q: tuple[Quality, ...] = ()) -> Vitals:
    return Vitals(
        patient="p-1",
        device=DEVICE[signal],
        gateway="gw-1",
        signal=signal,
        seq=next(_seq),
        samples=(Sample(t=t, v=v, q=q),),
    )


def feed(engine: Engine, *messages: Vitals) -> list[ConditionChange]:
    out: list[ConditionChange] = []
    for msg in messages:
        out += engine.on_vitals(msg, WARD)
    return out + engine.flush()


def raised(changes: list[ConditionChange], rule: str) -> list[ConditionChange]:
    return [c for c in changes if c.active and c.rule == rule]


def test_new_rules_are_physiological_medium() -> None:
    for rule in ("bp_low", "temp_high", "temp_low"):
        assert RULES[rule][:2] == (AlarmCategory.PHYSIOLOGICAL, Priority.MEDIUM)


def test_one_valid_low_systolic_raises_hypotension_and_the_next_normal_one_clears() -> None:
    engine = Engine(RuleSet())
    changes = feed(engine, vit(Signal.SYSTOLIC_BP, T0, 84.0, (Quality.DEVICE_CLOCK,)))
    (alarm,) = raised(changes, "bp_low")
    assert alarm.value == 84.0
    assert "84 mmHg" in alarm.text
    changes = feed(engine, vit(Signal.SYSTOLIC_BP, T0 + 600_000, 118.0))
    assert [c.rule for c in changes if not c.active] == ["bp_low"]


def test_body_movement_or_a_loose_cuff_never_pages_on_its_own() -> None:
    engine = Engine(RuleSet())
    for i, flag in enumerate((Quality.BODY_MOVEMENT, Quality.CUFF_LOOSE, Quality.IMPROPER_POSITION)):
        assert feed(engine, vit(Signal.SYSTOLIC_BP, T0 + i * 60_000, 70.0, (flag,))) == []
    # an irregular pulse does not make the pressure doubtful
    assert raised(feed(engine, vit(Signal.SYSTOLIC_BP, T0 + 300_000, 80.0, (Quality.IRREGULAR_PULSE,))), "bp_low")


def test_flagged_diastolic_and_mean_pressure_raise_no_technical_alarm() -> None:
    """Found by the hypotension scenario: they took the continuous path and raised poor_signal for the cuff."""
    engine = Engine(RuleSet())
    out: list[ConditionChange] = []
    for i, flag in enumerate((Quality.BODY_MOVEMENT, Quality.CUFF_LOOSE)):
        t = T0 + i * 600_000  # two flagged readings 10 minutes apart
        out += feed(
            engine,
            vit(Signal.SYSTOLIC_BP, t, 70.0, (Quality.DEVICE_CLOCK, flag)),
            vit(Signal.DIASTOLIC_BP, t, 45.0, (Quality.DEVICE_CLOCK, flag)),
            vit(Signal.MEAN_ARTERIAL_PRESSURE, t, 53.0, (Quality.DEVICE_CLOCK, flag)),
        )
        out += engine.tick(t + 1000)
    assert out == []


def test_a_flagged_reading_does_not_clear_either() -> None:
    engine = Engine(RuleSet())
    assert raised(feed(engine, vit(Signal.SYSTOLIC_BP, T0, 85.0)), "bp_low")
    assert feed(engine, vit(Signal.SYSTOLIC_BP, T0 + 60_000, 125.0, (Quality.BODY_MOVEMENT,))) == []
    assert [c.rule for c in engine.active()] == ["bp_low"]


def test_fever_and_hypothermia_bands() -> None:
    engine = Engine(RuleSet())
    assert feed(engine, vit(Signal.BODY_TEMPERATURE, T0, 39.0)) == []
    assert raised(feed(engine, vit(Signal.BODY_TEMPERATURE, T0 + 60_000, 39.4)), "temp_high")
    changes = feed(engine, vit(Signal.BODY_TEMPERATURE, T0 + 120_000, 34.6))
    assert raised(changes, "temp_low")
    assert [c.rule for c in changes if not c.active] == ["temp_high"]


def test_thresholds_can_be_overridden_per_patient() -> None:
    rules = RuleSet().with_patient_override("p-1", bp_systolic_low=100.0)
    assert raised(feed(Engine(rules), vit(Signal.SYSTOLIC_BP, T0, 98.0)), "bp_low")


def test_temperature_limits_must_not_overlap() -> None:
    with pytest.raises(ConfigError, match="temp_low < temp_high"):
        validate_overrides(RuleSet(), "p-1", {"temp_low": 37.0, "temp_high": 37.0})


def test_a_sleeping_cuff_is_not_a_silent_device() -> None:
    engine = Engine(RuleSet())
    status = DeviceStatus(
        patient="p-1", device="bpc-1", gateway="gw-1", t=T0, role=DeviceRole.BLOOD_PRESSURE_CUFF, connected=True
    )
    engine.on_device_status(status, WARD)
    feed(engine, vit(Signal.SYSTOLIC_BP, T0, 120.0))
    assert engine.tick(T0 + 6 * 3600_000) == []


def test_news2_points_of_systolic_and_temperature() -> None:
    assert [systolic_points(v) for v in (90, 91, 100, 101, 110, 111, 219, 220)] == [3, 2, 2, 1, 1, 0, 0, 3]
    assert [temperature_points(v) for v in (35.0, 35.1, 36.0, 36.1, 38.0, 38.1, 39.0, 39.1)] == [3, 1, 1, 0, 0, 1, 1, 2]
    score = partial_news2(96, 80, systolic=95, temperature=39.2)
    assert (score.score, score.systolic, score.temperature) == (4, 2, 2)
    assert score.label == "partial NEWS2 (HR, SpO2, BP, temperature)"
    assert partial_news2(96, 80).label == "partial NEWS2 (HR, SpO2 only)"


def test_news2_takes_a_recent_systolic_and_temperature_and_stays_partial() -> None:
    engine = Engine(RuleSet({"trend_enabled": False, "news2_spot_fresh_s": 3600}))
    # fever and soft BP, both above their own alarm limits ...
    out = feed(engine, vit(Signal.SYSTOLIC_BP, T0, 98.0), vit(Signal.BODY_TEMPERATURE, T0, 39.0))
    assert out == []
    # ... with an SpO2 of 92 (2 points): BP 2 + temperature 1 + SpO2 2 = 5 on air, an urgent partial NEWS2
    spo2 = [vit(Signal.SPO2, T0 + 1000 + i * 1000, 92.0) for i in range(300)]
    changes = feed(engine, *spo2)
    (urgent,) = raised(changes, "news2_urgent")
    assert urgent.value == 5.0
    assert urgent.text.startswith("partial NEWS2 (SpO2, BP, temperature; missing RR, O2, HR, ACVPU) 5")
    assert "systolic BP 98 mmHg (2)" in urgent.text


def test_news2_ignores_spot_checks_older_than_the_freshness_window() -> None:
    engine = Engine(RuleSet({"trend_enabled": False, "news2_spot_fresh_s": 60}))
    feed(engine, vit(Signal.SYSTOLIC_BP, T0, 98.0), vit(Signal.BODY_TEMPERATURE, T0, 39.0))
    spo2 = [vit(Signal.SPO2, T0 + 120_000 + i * 1000, 92.0) for i in range(300)]
    assert raised(feed(engine, *spo2), "news2_urgent") == []
