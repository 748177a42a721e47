"""NEWS2 band scoring (``band_points``) and the response tier both score types share."""

from __future__ import annotations

import math

import pytest

from wardwatch.alerting.engine.news2 import (
    PartialNews2,
    band_points,
    pulse_points,
    response_tier,
    spo2_points,
    temperature_points,
)


def test_a_value_scores_the_first_band_it_does_not_exceed() -> None:
    bands = ((40, 3), (50, 1), (90, 0))
    assert [band_points(v, bands, 2) for v in (39, 40, 40.5, 50, 90, 90.1)] == [3, 3, 1, 1, 0, 2]


def test_nan_scores_the_points_above_every_band() -> None:
    assert band_points(math.nan, ((1, 0),), 3) == 3
    assert pulse_points(math.nan) == 3
    assert spo2_points(math.nan, 2, on_o2=False) == 0


@pytest.mark.parametrize(
    ("celsius", "points"), [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1), (39.1, 2)]
)
def test_temperature_band_edges(celsius: float, points: int) -> None:
    assert temperature_points(celsius) == points


@pytest.mark.parametrize(("spo2", "air", "on_o2"), [(83, 3, 3), (87, 1, 1), (92, 0, 0), (93, 0, 1), (97, 0, 3)])
def test_spo2_scale_2_scores_high_saturation_only_on_oxygen(spo2: float, air: int, on_o2: int) -> None:
    assert spo2_points(spo2, 2, on_o2=False) == air
    assert spo2_points(spo2, 2, on_o2=True) == on_o2


@pytest.mark.parametrize(
    ("score", "any_three", "tier"),
    [
        (7, False, "high: emergency response"),
        (5, True, "medium: urgent response within 1 h"),
        (3, True, "low-medium: urgent ward-based response"),
        (1, False, "low: ward-based response"),
        (0, False, "routine monitoring"),
    ],
)
def test_response_tier(score: int, any_three: bool, tier: str) -> None:
    assert response_tier(score, any_three) == tier
    assert PartialNews2(score=score, spo2=3 if any_three else 0, o2=0, pulse=0).tier == tier
