"""Scenario parsing, the physiology/device model, ground truth and offline render."""

from __future__ import annotations

import io
from typing import Any

import pytest

from wardwatch.core import gatt
from wardwatch.core.quality import plx_quality
from wardwatch.core.schema import DeviceStatus, Quality, Signal, Vitals, decode
from wardwatch.firmware_sim.cli import main
from wardwatch.firmware_sim.groundtruth import dump_jsonl, ground_truth, load_jsonl
from wardwatch.firmware_sim.model import OximeterTrack, StrapTrack, simulate
from wardwatch.firmware_sim.render import render, render_messages
from wardwatch.firmware_sim.scenario import (
    ScenarioError,
    load_scenario,
    named_scenarios,
    parse_duration,
    scenario_from_dict,
)

LIBRARY = sorted(named_scenarios())


def _vitals(name: str) -> tuple[Any, list[Any], list[Vitals]]:
    scenario = load_scenario(name)
    tracks = simulate(scenario)
    messages = list(render_messages(tracks))
    return scenario, tracks, [m for m in messages if isinstance(m, Vitals)]


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("90s") == 90
    assert parse_duration("2m") == 120
    assert parse_duration(7) == 7
    with pytest.raises(ScenarioError, match="cannot read"):
        parse_duration("soon")


def test_library_covers_every_case() -> None:
    kinds = {str(e.kind) for name in LIBRARY for p in load_scenario(name).patients for e in p.events}
    assert {
        "desaturation",
        "brief_dip",
        "tachycardia",
        "bradycardia",
        "motion",
        "sensor_off",
        "battery_drain",
        "out_of_range",
        "busy",
        "low_perfusion",
        "questionable_measurement",
        "invalid_measurement",
        "sensor_displaced",
    } <= kinds
    assert len(load_scenario("ward").patients) >= 20


def test_invalid_scenario_says_what_is_wrong() -> None:
    with pytest.raises(ScenarioError, match="needs a target"):
        scenario_from_dict(
            {
                "name": "x",
                "duration": 60,
                "patients": [
                    {
                        "id": "p-1",
                        "devices": [{"kind": "pulse_oximeter", "id": "plx-1"}],
                        "events": [{"kind": "desaturation", "at": 10}],
                    }
                ],
            }
        )
    with pytest.raises(ScenarioError, match="unknown device"):
        scenario_from_dict(
            {
                "name": "x",
                "duration": 60,
                "patients": [
                    {
                        "id": "p-1",
                        "devices": [{"kind": "pulse_oximeter", "id": "plx-1"}],
                        "events": [{"kind": "sensor_off", "at": 10, "device": "nope"}],
                    }
                ],
            }
        )


@pytest.mark.parametrize("name", ["baseline", "motion", "out-of-range"])
def test_render_is_deterministic_and_valid_wire(name: str) -> None:
    scenario = load_scenario(name)
    first, second = io.BytesIO(), io.BytesIO()
    render(scenario, simulate(scenario), first)
    render(scenario, simulate(scenario), second)
    assert first.getvalue() == second.getvalue()
    seqs: dict[str, int] = {}
    last_t = 0
    for line in first.getvalue().splitlines():
        message = decode(line)  # validates against wire schema v1
        assert isinstance(message, Vitals | DeviceStatus)
        assert message.seq == seqs.get(message.device, -1) + 1  # per-device sequence
        seqs[message.device] = message.seq
        if isinstance(message, Vitals) and Quality.FROM_STORAGE in message.samples[0].q:
            continue  # records fetched after a reconnect carry their original time
        t = message.t if isinstance(message, DeviceStatus) else message.samples[-1].t
        assert t >= last_t - 60_000  # time-ordered (RR samples are stamped back from the notification)
        last_t = max(last_t, t)


def test_values_are_what_the_gatt_codecs_carry() -> None:
    scenario = load_scenario("oximeter-flags")
    tracks = simulate(scenario)
    strap = next(t for t in tracks if isinstance(t, StrapTrack))
    oxi = next(t for t in tracks if isinstance(t, OximeterTrack))
    for i in range(0, strap.seconds, 7):
        reading = strap.reading(i)
        decoded = gatt.decode_heart_rate_measurement(gatt.encode_heart_rate_measurement(reading.to_gatt()))
        assert decoded.heart_rate == reading.heart_rate
        assert decoded.rr_ticks == reading.rr_ticks
        assert decoded.sensor_contact == reading.contact
    by_t = {
        (m.signal, m.samples[0].t): m.samples[0]
        for m in render_messages(tracks)
        if isinstance(m, Vitals) and m.device == oxi.device.id
    }
    for i in range(0, oxi.seconds, 5):
        oxi_reading = oxi.reading(i)
        value = gatt.decode_plx_continuous_measurement(gatt.encode_plx_continuous_measurement(oxi_reading.to_gatt()))
        sample = by_t[(Signal.SPO2, oxi_reading.t_ms)]
        assert sample.v == value.spo2.value
        assert by_t[(Signal.PERFUSION_INDEX, oxi_reading.t_ms)].v == value.pulse_amplitude_index.value  # type: ignore[union-attr]
        assert value.measurement_status is not None
        assert value.device_sensor_status is not None
        assert set(sample.q) == set(plx_quality(value.measurement_status, value.device_sensor_status))


def _in(t: int, start: int, end: int) -> bool:
    return start <= t < end


def test_ground_truth_matches_emitted_desaturation_and_dips() -> None:
    scenario, tracks, vitals = _vitals("desaturation-sudden")
    (event,) = ground_truth(scenario, tracks)
    assert event.event == "desaturation"
    assert event.kind == "clinical"
    assert event.should_page
    spo2 = [(m.samples[0].t, m.samples[0].v) for m in vitals if m.signal == Signal.SPO2]
    inside = [v for t, v in spo2 if _in(t, event.start, event.end) and v is not None]
    outside = [v for t, v in spo2 if not _in(t, event.start - 5000, event.end + 30_000) and v is not None]
    assert min(inside) <= 80
    assert min(outside) >= 93
    scenario, tracks, vitals = _vitals("brief-dips")
    dips = ground_truth(scenario, tracks)
    assert len(dips) == 4
    assert not any(d.should_page for d in dips)
    for dip in dips:
        values = [m.samples[0].v for m in vitals if m.signal == Signal.SPO2 and _in(m.samples[0].t, dip.start, dip.end)]
        assert min(v for v in values if v is not None) < 90
        assert sum(1 for v in values if v is not None and v < 90) < 20


def test_ground_truth_matches_emitted_faults(tmp_path: Any) -> None:
    scenario, tracks, vitals = _vitals("sensor-off")
    events = ground_truth(scenario, tracks)
    strap_off = [e for e in events if e.devices == ("hrs-sensor-off",)]
    assert [e.should_page for e in strap_off] == [False, True]
    for event in strap_off:
        hr = [
            m.samples[0]
            for m in vitals
            if m.signal == Signal.HEART_RATE and _in(m.samples[0].t, event.start + 1000, event.end)
        ]
        assert hr
        assert all(s.v is None and Quality.CONTACT_LOST in s.q for s in hr)
    scenario, tracks, vitals = _vitals("out-of-range")
    events = ground_truth(scenario, tracks)
    for event in events:
        assert event.event == "out_of_range"
        assert event.kind == "technical"
        during = [
            m
            for m in vitals
            if _in(m.samples[0].t, event.start + 1000, event.end) and Quality.FROM_STORAGE not in m.samples[0].q
        ]
        assert during == []
    # spot-checks taken while out of range come back from storage after the reconnect
    stored = [m for m in vitals if m.samples[0].q and Quality.FROM_STORAGE in m.samples[0].q]
    assert stored
    scenario, tracks, vitals = _vitals("low-battery")
    by_name = {e.event: e for e in ground_truth(scenario, tracks)}
    assert by_name["battery_depleted"].should_page
    assert not by_name["low_battery"].should_page
    after = [m for m in vitals if m.device == "hrs-battery" and m.samples[0].t >= by_name["battery_depleted"].start]
    assert after == []
    path = tmp_path / "gt.jsonl"
    dump_jsonl(ground_truth(scenario, tracks), path)
    assert load_jsonl(path) == ground_truth(scenario, tracks)


def test_cli_render_and_list(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ward.jsonl"
    gt = tmp_path / "gt.jsonl"
    assert main(["render", "brief-dips", "-o", str(out), "--ground-truth", str(gt)]) == 0
    assert out.stat().st_size > 0
    assert len(load_jsonl(gt)) == 4
    assert main(["list"]) == 0
    assert "ward" in capsys.readouterr().out
