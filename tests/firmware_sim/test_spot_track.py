"""Blood-pressure cuffs and thermometers in scenario files: schedule, artefacts, storage, clocks, ground truth."""

from __future__ import annotations

import io
import json

import msgspec
import pytest

from wardwatch.core.schema import Quality, Signal, Vitals
from wardwatch.firmware_sim.cli import main
from wardwatch.firmware_sim.groundtruth import ground_truth
from wardwatch.firmware_sim.model import simulate
from wardwatch.firmware_sim.render import render_messages
from wardwatch.firmware_sim.scenario import DeviceKind, ScenarioError, load_scenario, scenario_from_dict
from wardwatch.firmware_sim.spot_track import SpotTrack, spot_messages

SPOT_SCENARIOS = ("hypotension", "fever", "hypothermia")


def spot_tracks(name: str) -> dict[DeviceKind, SpotTrack]:
    return {t.device.kind: t for t in simulate(load_scenario(name)) if isinstance(t, SpotTrack)}


def vitals(name: str, signal: Signal) -> list[tuple[int, Vitals]]:
    """(publish order, message) of ``signal`` in the rendered stream."""
    tracks = simulate(load_scenario(name))
    return [(i, m) for i, m in enumerate(render_messages(tracks)) if isinstance(m, Vitals) and m.signal == signal]


def test_readings_follow_the_schedule_of_each_device() -> None:
    scenario = load_scenario("hypotension")
    tracks = spot_tracks("hypotension")
    cuff, thermometer = tracks[DeviceKind.BLOOD_PRESSURE_CUFF], tracks[DeviceKind.THERMOMETER]
    assert [r.index + 1 for r in cuff.readings] == list(range(1200, round(scenario.duration) + 1, 1200))
    assert [r.index + 1 for r in thermometer.readings] == list(range(1800, round(scenario.duration) + 1, 3600))


def test_movement_and_loose_cuff_readings_carry_their_status_bits_and_read_wrong() -> None:
    cuff = spot_tracks("hypotension")[DeviceKind.BLOOD_PRESSURE_CUFF]
    moved = [r for r in cuff.readings if r.movement]
    loose = [r for r in cuff.readings if r.cuff_loose]
    assert len(moved) == len(loose) == 1
    assert moved[0].values[0] < 90 < moved[0].truth  # would page on its own: the flag must stop it
    assert loose[0].values[0] > loose[0].truth + 15
    flags = {m.samples[0].v: m.samples[0].q for _, m in vitals("hypotension", Signal.SYSTOLIC_BP)}
    assert Quality.BODY_MOVEMENT in flags[moved[0].values[0]]
    assert Quality.CUFF_LOOSE in flags[loose[0].values[0]]


def test_readings_taken_while_the_gateway_is_away_arrive_later_with_their_device_times() -> None:
    scenario = load_scenario("hypotension")
    away = next(e for e in scenario.patients[0].events if e.kind == "out_of_range")
    back_ms = scenario.start_ms + round(away.end * 1000)
    systolic = [m.samples[0] for _, m in vitals("hypotension", Signal.SYSTOLIC_BP)]
    times = [s.t for s in systolic]
    assert times == sorted(times)  # in the order taken
    stored = [s for s in systolic if scenario.start_ms + away.at * 1000 <= s.t < back_ms]
    assert len(stored) == 2
    assert all(s.q[0] == Quality.DEVICE_CLOCK for s in stored)
    # published only when the gateway is back
    cuff = spot_tracks("hypotension")[DeviceKind.BLOOD_PRESSURE_CUFF]
    published = {m.samples[0].t: at for at, _, m in spot_messages(cuff, 0) if m.signal == Signal.SYSTOLIC_BP}
    assert [published[s.t] for s in stored] == [back_ms, back_ms]
    assert all(published[t] == t for t in times if t not in {s.t for s in stored})


def test_an_unset_clock_is_stamped_at_reception_and_flagged() -> None:
    raw = {
        "name": "unset-cuff",
        "duration": "1h",
        "patients": [
            {
                "id": "p-1",
                "devices": [
                    {"kind": "blood_pressure_cuff", "id": "bpc-1", "spot_check_every": "10m", "clock": "unset"}
                ],
                "events": [{"kind": "out_of_range", "at": "15m", "duration": "20m"}],
            }
        ],
    }
    scenario = scenario_from_dict(raw)
    (track,) = simulate(scenario)
    messages = [m for m in render_messages([track]) if isinstance(m, Vitals) and m.signal == Signal.SYSTOLIC_BP]
    assert len(messages) == 6
    assert {m.samples[0].q for m in messages} == {(Quality.DEVICE_CLOCK_UNSET,)}
    back_ms = scenario.start_ms + 35 * 60_000  # the first second in range again
    stored = [m.samples[0].t for m in messages[1:3]]  # 20 and 30 min: kept until the link is back
    assert stored == [back_ms, back_ms + 1]  # the gateway keeps each series strictly increasing


def test_a_cuff_without_a_schedule_is_refused_with_the_fix() -> None:
    raw = {"name": "x", "duration": 60, "patients": [{"id": "p-1", "devices": [{"kind": "thermometer", "id": "t-1"}]}]}
    with pytest.raises(ScenarioError, match="spot_check_every"):
        scenario_from_dict(raw)


@pytest.mark.parametrize("name", SPOT_SCENARIOS)
def test_each_scenario_has_one_paging_episode_seen_by_a_valid_reading(name: str) -> None:
    scenario = load_scenario(name)
    truth = ground_truth(scenario, simulate(scenario))
    paging = [e for e in truth if e.kind == "clinical" and e.should_page]
    assert [e.event for e in paging] == [name]
    assert paging[0].detail["readings_beyond"] >= 1
    assert paging[0].max_delay is not None
    assert not [e for e in truth if e.kind == "technical" and e.should_page]  # sleeping devices: nobody can tell


def test_sim_render_writes_the_readings_and_ground_truth(tmp_path: object, capsys: pytest.CaptureFixture[str]) -> None:
    out = f"{tmp_path}/fever.jsonl"
    truth = f"{tmp_path}/fever-truth.jsonl"
    assert main(["render", "fever", "-o", out, "--ground-truth", truth]) == 0
    with open(out, "rb") as f:
        lines = [json.loads(line) for line in io.BytesIO(f.read())]
    assert {line["signal"] for line in lines} == {
        "body_temperature",
        "systolic_bp",
        "diastolic_bp",
        "mean_arterial_pressure",
    }
    with open(truth, "rb") as f:
        events = [json.loads(line) for line in f]
    assert [e["event"] for e in events if e["should_page"]] == ["fever"]
    assert json.loads(capsys.readouterr().err)["messages"] == len(lines)


def test_the_readings_are_seeded() -> None:
    a = list(render_messages(simulate(load_scenario("fever"))))
    b = list(render_messages(simulate(load_scenario("fever"))))
    assert a == b
    reseeded = msgspec.structs.replace(load_scenario("fever"), seed=99)
    assert list(render_messages(simulate(reseeded))) != a
