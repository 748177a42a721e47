"""Full NEWS2 from device and nurse observations: RCP 2017 chart bands and worked examples."""

from __future__ import annotations

import pytest

from wardwatch.alerting.engine.news2 import (
    PARAMS,
    Observed,
    Param,
    consciousness_points,
    most_recent,
    respiration_points,
    score_news2,
    systolic_points,
    temperature_points,
)

NOW = 1_800_000_000_000
HOUR = 3_600_000
FRESH = dict.fromkeys(PARAMS, 4 * HOUR)


def nurse(value: float | str | bool, age_ms: int = 0) -> Observed:
    return Observed(value, NOW - age_ms, "nurse")


def device(value: float, age_ms: int = 0) -> Observed:
    return Observed(value, NOW - age_ms, "device")


def chart(
    rr: float, spo2: float, o2: bool, sbp: float, pulse: float, acvpu: str, temp: float
) -> dict[Param, Observed | None]:
    return {
        Param.RESPIRATION: nurse(rr),
        Param.SPO2: device(spo2),
        Param.O2: nurse(o2),
        Param.SYSTOLIC: nurse(sbp),
        Param.PULSE: device(pulse),
        Param.CONSCIOUSNESS: nurse(acvpu),
        Param.TEMPERATURE: nurse(temp),
    }


@pytest.mark.parametrize(("rate", "points"), [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)])
def test_respiration_bands_follow_the_rcp_chart(rate: float, points: int) -> None:
    assert respiration_points(rate) == points


@pytest.mark.parametrize(
    ("celsius", "points"), [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)]
)
def test_temperature_bands_follow_the_rcp_chart(celsius: float, points: int) -> None:
    assert temperature_points(celsius) == points


@pytest.mark.parametrize(
    ("mmhg", "points"), [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)]
)
def test_systolic_bands_follow_the_rcp_chart(mmhg: float, points: int) -> None:
    assert systolic_points(mmhg) == points


def test_consciousness_is_zero_only_when_alert_and_rejects_unknown_levels() -> None:
    assert [consciousness_points(level) for level in "ACVPU"] == [0, 3, 3, 3, 3]
    with pytest.raises(ValueError, match="ACVPU"):
        consciousness_points("X")


def test_worked_example_all_normal_scores_zero_and_full() -> None:
    score = score_news2(chart(16, 97, False, 120, 72, "A", 37.0), NOW, FRESH)
    assert (score.score, score.full, score.missing, score.label) == (0, True, (), "NEWS2")
    assert score.tier == "routine monitoring"


def test_worked_example_deteriorating_patient_scores_eight() -> None:
    # RR 24 (2) + SpO2 93 (2) + air (0) + SBP 105 (1) + pulse 115 (2) + alert (0) + 38.5 °C (1) = 8
    score = score_news2(chart(24, 93, False, 105, 115, "A", 38.5), NOW, FRESH)
    assert score.full
    assert score.score == 8
    assert score.tier.startswith("high")
    assert score.points[Param.PULSE] == 2
    assert score.points[Param.RESPIRATION] == 2


def test_worked_example_single_red_parameter() -> None:
    # RR 8 scores 3, everything else normal: aggregate 3, the 'red score' tier
    score = score_news2(chart(8, 97, False, 120, 72, "A", 37.0), NOW, FRESH)
    assert (score.score, score.any_three) == (3, True)
    assert score.tier.startswith("low-medium")


def test_worked_example_scale_2_on_oxygen_and_new_confusion() -> None:
    # scale 2: SpO2 95 on O2 (2) + O2 (2) + RR 22 (2) + SBP 95 (2) + pulse 95 (1) + new confusion (3) + 35.5 °C (1) = 13
    score = score_news2(chart(22, 95, True, 95, 95, "C", 35.5), NOW, FRESH, scale=2)
    assert (score.score, score.points[Param.SPO2], score.full) == (13, 2, True)
    # the same SpO2 on air is in the target range of scale 2
    on_air = score_news2(chart(22, 95, False, 95, 95, "C", 35.5), NOW, FRESH, scale=2)
    assert (on_air.points[Param.SPO2], on_air.score) == (0, 9)


def test_stale_and_absent_parameters_make_it_partial_and_are_named() -> None:
    observed = chart(16, 97, False, 120, 72, "A", 37.0)
    observed[Param.RESPIRATION] = nurse(30, age_ms=4 * HOUR + 1)  # too old: would score 3
    observed[Param.CONSCIOUSNESS] = None
    score = score_news2(observed, NOW, FRESH)
    assert not score.full
    assert score.missing == (Param.RESPIRATION, Param.CONSCIOUSNESS)
    assert score.score == 0
    assert score.label == "partial NEWS2 (SpO2, O2, BP, HR, temperature; missing RR, ACVPU)"


def test_profile_oxygen_scores_but_o2_counts_missing_without_an_observation() -> None:
    observed = chart(16, 97, False, 120, 72, "A", 37.0)
    observed[Param.O2] = None
    score = score_news2(observed, NOW, FRESH, default_o2=True)
    assert (score.score, score.missing) == (2, (Param.O2,))


def test_freshness_is_per_parameter() -> None:
    observed = chart(16, 97, False, 120, 72, "A", 37.0)
    observed[Param.PULSE] = device(72, age_ms=3 * 60_000)
    fresh = {**FRESH, Param.PULSE: 2 * 60_000}
    assert score_news2(observed, NOW, fresh).missing == (Param.PULSE,)


def test_the_most_recent_source_wins_and_a_tie_goes_to_the_nurse() -> None:
    older_device, newer_nurse = device(70, age_ms=60_000), nurse(120)
    assert most_recent(older_device, newer_nurse) is newer_nurse
    newer_device = device(80)
    assert most_recent(nurse(120, age_ms=1), newer_device) is newer_device
    tie = nurse(90)
    assert most_recent(device(80), tie) is tie
    assert most_recent(None, None) is None
