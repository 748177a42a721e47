"""The spot-check scenarios (hypotension, fever) scored against their ground truth through the engine."""

from __future__ import annotations

import datetime as dt

import pytest

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.replay import run
from wardwatch.alerting.rules import RuleSet
from wardwatch.alerting.scoring import score
from wardwatch.core.schema import Quality, Signal
from wardwatch.firmware_sim.groundtruth import ground_truth
from wardwatch.firmware_sim.model import simulate
from wardwatch.firmware_sim.render import render_messages
from wardwatch.firmware_sim.scenario import load_scenario
from wardwatch.firmware_sim.spot_scenarios import SPOT_SCENARIOS, render, signals_of, spot_scenario

START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("name", "rule"), [("hypotension", "bp_low"), ("fever", "temp_high")])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scenario_pages_for_its_episode_and_nothing_else(name: str, rule: str, seed: int) -> None:
    scenario = spot_scenario(name, START, seed=seed)
    messages = render(scenario)
    changes = list(run([("ward-a", m) for m in messages], Engine(RuleSet())))
    result = score(scenario.truth, changes, patient_days=2.0)
    assert (result.clinical_events, result.detected) == (1, 1)
    assert result.false_physiological_pages == 0
    assert result.nonpaging_events_paged == 0
    assert {c.rule for c in changes if c.active} == {rule}


def test_hypotension_scenario_has_flagged_artefacts_below_the_limit() -> None:
    scenario = spot_scenario("hypotension", START)
    messages = render(scenario)
    flagged = [
        m.samples[0] for m in messages if m.signal == Signal.SYSTOLIC_BP and m.samples[0].q != (Quality.DEVICE_CLOCK,)
    ]
    assert [s.q for s in flagged] == [
        (Quality.DEVICE_CLOCK, Quality.BODY_MOVEMENT),
        (Quality.DEVICE_CLOCK, Quality.CUFF_LOOSE),
    ]
    assert (flagged[0].v or 0.0) < 90
    assert sum(1 for v in signals_of(messages, Signal.SYSTOLIC_BP) if v is not None and v <= 90) == 3
    assert [e.event for e in scenario.truth] == ["hypotension", "bp_movement", "bp_cuff_loose"]


def test_scenarios_are_seeded() -> None:
    for name in SPOT_SCENARIOS:
        assert render(spot_scenario(name, START, seed=7)) == render(spot_scenario(name, START, seed=7))
        assert render(spot_scenario(name, START, seed=7)) != render(spot_scenario(name, START, seed=8))


@pytest.mark.parametrize(
    ("name", "rule"), [("hypotension", "bp_low"), ("fever", "temp_high"), ("hypothermia", "temp_low")]
)
def test_scenario_files_page_their_episode_and_no_artefact(name: str, rule: str) -> None:
    """The named scenario files (cuff and thermometer on a schedule, readings stored while the gateway is
    away, movement and loose-cuff artefacts) through the engine: the episode pages, nothing else does."""
    scenario = load_scenario(name)
    tracks = simulate(scenario)
    messages = list(render_messages(tracks))
    changes = list(run([(scenario.ward, m) for m in messages], Engine(RuleSet())))
    result = score(ground_truth(scenario, tracks), changes, patient_days=scenario.duration / 86_400)
    assert (result.clinical_events, result.detected) == (1, 1)
    assert result.false_physiological_pages == 0
    assert result.nonpaging_events_paged == 0
    assert {c.rule for c in changes if c.active} == {rule}
