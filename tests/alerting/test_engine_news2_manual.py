"""The engine's NEWS2 from devices and a nurse's manual observations: full, partial, escalation."""

from __future__ import annotations

import itertools

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.engine.news2 import NurseObservation, Param
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import Sample, Signal, Vitals

T0 = 1_767_225_600_000
WARD = "ward-a"
MIN = 60_000
_seq = itertools.count(1)


def vit(signal: Signal, t: int, v: float) -> Vitals:
    device = {Signal.SPO2: "plx-1", Signal.PULSE_RATE: "plx-1", Signal.SYSTOLIC_BP: "bpc-1"}[signal]
    return Vitals(
        patient="p-1", device=device, gateway="gw-1", signal=signal, seq=next(_seq), samples=(Sample(t=t, v=v),)
    )


def oximeter(engine: Engine, start: int, seconds: int, spo2: float, pulse: float) -> list[ConditionChange]:
    out: list[ConditionChange] = []
    for i in range(seconds):
        out += engine.on_vitals(vit(Signal.SPO2, start + i * 1000, spo2), WARD)
        out += engine.on_vitals(vit(Signal.PULSE_RATE, start + i * 1000 + 1, pulse), WARD)
    return out


def raised(changes: list[ConditionChange], rule: str) -> list[ConditionChange]:
    return [c for c in changes if c.active and c.rule == rule]


def nurse(t: int, **values: float | str | bool) -> NurseObservation:
    return NurseObservation(t=t, **values)  # type: ignore[arg-type]


def test_device_only_scores_are_partial_with_the_nurse_parameters_missing() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    oximeter(engine, T0, 180, 97, 80)
    score = engine.news2("p-1")
    assert score is not None
    assert not score.full
    assert set(score.missing) == {Param.RESPIRATION, Param.O2, Param.SYSTOLIC, Param.CONSCIOUSNESS, Param.TEMPERATURE}


def test_nurse_observations_complete_the_score_and_a_full_score_escalates_where_the_partial_did_not() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    # SpO2 93 (2) + pulse 115 (2) on the default air: partial 4, no NEWS2 alarm
    changes = oximeter(engine, T0, 240, 93, 115)
    assert raised(changes, "news2_urgent") == []
    assert raised(changes, "news2_emergency") == []
    # the nurse adds RR 22 (2), SBP 105 (1), 38.5 °C (1), alert (0), on air (0): full NEWS2 8
    t = T0 + 240_000
    obs = nurse(t, respiration=22, systolic=105, temperature=38.5, consciousness="A", supplemental_o2=False)
    changes = engine.on_observation("p-1", WARD, obs)
    (emergency,) = raised(changes, "news2_emergency")
    assert emergency.value == 8
    assert emergency.text.startswith("NEWS2 8: ")
    assert "respiration 22 /min nurse (2)" in emergency.text
    assert emergency.news2 is not None
    assert emergency.news2.full
    assert (emergency.news2.respiration, emergency.news2.systolic, emergency.news2.consciousness) == (2, 1, 0)
    score = engine.news2("p-1")
    assert score is not None
    assert score.full


def test_a_single_red_parameter_from_the_nurse_raises_urgent_at_once() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    oximeter(engine, T0, 120, 97, 80)
    changes = engine.on_observation("p-1", WARD, nurse(T0 + 120_000, consciousness="V"))
    (urgent,) = raised(changes, "news2_urgent")
    assert "ACVPU V nurse (3)" in urgent.text


def test_the_more_recent_of_device_and_nurse_wins_per_parameter() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    # the nurse counted a pulse of 135 (3) ten minutes before the oximeter's 80 (0)
    engine.on_observation("p-1", WARD, nurse(T0 - 10 * MIN, pulse=135))
    oximeter(engine, T0, 180, 97, 80)
    score = engine.news2("p-1")
    assert score is not None
    assert score.used[Param.PULSE].source == "device"
    assert score.points[Param.PULSE] == 0
    # a newer nurse entry of the pulse takes over
    engine.on_observation("p-1", WARD, nurse(T0 + 180_000, pulse=135))
    score = engine.news2("p-1")
    assert score is not None
    assert score.used[Param.PULSE].source == "nurse"
    assert score.points[Param.PULSE] == 3


def test_nurse_observations_expire_after_their_freshness_bound() -> None:
    engine = Engine(RuleSet({"trend_enabled": False, "news2_spot_fresh_s": 3600}))
    obs = nurse(T0, respiration=16, systolic=120, temperature=37.0, consciousness="A", supplemental_o2=False)
    engine.on_observation("p-1", WARD, obs)
    oximeter(engine, T0, 180, 97, 80)
    fresh = engine.score_now("p-1", T0 + 180_000)
    assert fresh is not None
    assert fresh.full
    stale = engine.score_now("p-1", T0 + 3600_000 + 1)
    assert stale is not None
    # the nurse's five are too old and the oximeter stopped an hour ago: nothing is recent
    assert stale.missing == tuple(Param)


def test_a_nurse_only_patient_gets_a_full_score_without_devices() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    obs = nurse(
        T0, respiration=16, spo2=97, supplemental_o2=False, systolic=120, pulse=72, consciousness="A", temperature=37.0
    )
    assert engine.on_observation("p-1", WARD, obs) == []
    score = engine.news2("p-1")
    assert score is not None
    assert (score.full, score.score) == (True, 0)


def test_an_old_entry_is_scored_as_of_the_service_clock() -> None:
    engine = Engine(RuleSet({"trend_enabled": False, "news2_spot_fresh_s": 3600}))
    # a nurse enters, now, a respiratory rate of 30 (3 points) she took 2 h ago: too old to count
    changes = engine.on_observation("p-1", WARD, nurse(T0 - 2 * 3600_000, respiration=30), now_ms=T0)
    assert raised(changes, "news2_urgent") == []
    score = engine.news2("p-1")
    assert score is not None
    assert (score.t, Param.RESPIRATION in score.missing) == (T0, True)
