"""The replay CLI: input line forms, output JSONL, stats, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.replay import (
    Availability,
    ReplayStats,
    change_from_dict,
    change_to_dict,
    inputs_to_jsonl,
    parse_line,
    read_inputs,
    replay_main,
    run,
)
from wardwatch.alerting.synthetic import scenario_library
from wardwatch.core.errors import SchemaError
from wardwatch.core.schema import DataGap, Sample, Series, Signal, Vitals, VitalsBatch, encode

T0 = 1_767_225_600_000


def spo2(t: int, v: float, seq: int, patient: str = "p-1") -> Vitals:
    return Vitals(
        patient=patient, device="plx-1", gateway="gw-1", signal=Signal.SPO2, seq=seq, samples=(Sample(t=t, v=v),)
    )


def desaturation_lines() -> list[str]:
    values = [96] * 5 + [94, 92, 90, 88] + [85] * 20 + [93] * 15
    return [encode(spo2(T0 + i * 1000, v, i)).decode() for i, v in enumerate(values)]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]], str]:
    code = replay_main(argv)
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    return code, lines, captured.err


def test_plain_wire_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(desaturation_lines()) + "\n\n")
    code, out, _ = run_cli([str(path), "--ward", "ward-b", "--stats"], capsys)
    assert code == 0
    assert [(o["rule"], o["active"], o["ward"]) for o in out] == [
        ("spo2_low", True, "ward-b"),
        ("spo2_low", False, "ward-b"),
    ]
    assert out[0]["category"] == "physiological"
    assert out[0]["priority"] == "medium"
    assert change_to_dict(change_from_dict(out[0])) == out[0]


def test_stats_go_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join(desaturation_lines()))
    _, _, err = run_cli([str(path), "--stats"], capsys)
    stats = json.loads(err)
    assert stats["samples"] == 44
    assert stats["engine"]["samples"] == 44
    assert stats["rejected"] == 0


def test_wrapped_topic_and_availability_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    msg = json.loads(encode(spo2(T0, 96, 1)))
    lines = [
        json.dumps({"ward": "ward-c", "message": msg}),
        json.dumps({**json.loads(encode(spo2(T0 + 1000, 96, 2))), "ward": "ward-c"}),
        json.dumps(
            {
                "topic": "wardwatch/v1/vitals/ward-c/gw-1/p-1/plx-1/spo2",
                "payload": json.loads(encode(spo2(T0 + 2000, 96, 3))),
            }
        ),
        json.dumps({"topic": "wardwatch/v1/gateway/ward-c/gw-1/availability", "payload": "offline", "t": T0 + 3000}),
        json.dumps({"kind": "availability", "ward": "ward-c", "gateway": "gw-1", "online": True, "t": T0 + 90_000}),
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines))
    code, out, _ = run_cli([str(path), "--no-flush"], capsys)
    assert code == 0
    assert [(o["rule"], o["active"], o["ward"], o["t"]) for o in out] == [
        ("gateway_offline", True, "ward-c", T0 + 63_000)  # offline for gateway_offline_delay_s
    ]
    code, out, _ = run_cli([str(path)], capsys)
    assert [(o["rule"], o["active"]) for o in out] == [("gateway_offline", True), ("gateway_offline", False)]


def test_malformed_lines_are_reported_and_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = desaturation_lines()
    lines.insert(3, '{"v": 1, "kind": "vitals"}')
    lines.insert(5, "not json")
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines))
    code, out, err = run_cli([str(path)], capsys)
    assert code == 1
    assert "line 4:" in err
    assert "line 6:" in err
    assert [o["rule"] for o in out if o["active"]] == ["spo2_low"]


def test_sort_and_naive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = desaturation_lines()
    path = tmp_path / "shuffled.jsonl"
    path.write_text("\n".join(reversed(lines)))
    _, unsorted_out, _ = run_cli([str(path)], capsys)
    assert unsorted_out == []  # newest first: everything after the first line is late
    _, sorted_out, _ = run_cli([str(path), "--sort"], capsys)
    assert [o["rule"] for o in sorted_out if o["active"]] == ["spo2_low"]
    _, naive_out, _ = run_cli([str(path), "--sort", "--naive"], capsys)
    assert naive_out[0]["t"] == T0 + 8000  # the naive monitor pages on the first sample below


def test_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main([str(tmp_path / "missing.jsonl")]) == 2
    rules = tmp_path / "rules.toml"
    rules.write_text("[defaults]\nspo2_low = 300\n")
    path = tmp_path / "s.jsonl"
    path.write_text("")
    assert replay_main([str(path), "--rules", str(rules)]) == 2
    assert "spo2_low" in capsys.readouterr().err


def test_parse_line_forms() -> None:
    assert parse_line("  ", "ward-a") is None
    gap = DataGap(gateway="gw-1", t=T0, dropped=3, first_t=T0 - 3000, last_t=T0)
    item = parse_line(
        json.dumps({"topic": "wardwatch/v1/gateway/ward-x/gw-1/gap", "payload": json.loads(encode(gap))}), "w"
    )
    assert item == ("ward-x", gap)
    with pytest.raises(SchemaError):
        parse_line(json.dumps({"topic": "wardwatch/v1/gateway/ward-x/gw-1/availability", "payload": "maybe"}), "w")
    with pytest.raises(SchemaError):
        parse_line("[1, 2]", "w")
    assert parse_line(
        json.dumps({"topic": "wardwatch/v1/gateway/ward-x/gw-1/availability", "payload": "online"}), "w", 5
    ) == Availability("ward-x", "gw-1", True, 5)


def test_round_trip_of_a_scenario_gives_the_same_alarms(tmp_path: Path) -> None:
    scenario = scenario_library(3, 1.5, seed=4)
    direct = list(run(scenario.messages, Engine()))
    path = tmp_path / "scenario.jsonl"
    path.write_text("\n".join(inputs_to_jsonl(scenario.messages)))
    stats = ReplayStats()
    with path.open("rb") as handle:
        replayed = list(run(list(read_inputs(handle, "ward-a", stats, None)), Engine(), stats=stats))
    assert replayed == direct
    assert direct  # the scenario has events
    assert stats.rejected == 0
    assert abs(stats.patient_days - 3 * 1.5 / 24) < 0.01


def test_profile_option_replays_with_the_arrhythmia_definitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # heart rate 150 /min from the strap (no RR intervals): the arrhythmia profile's time fallback
    # (> 140 /min for 5 s) pages, the virtual-ward default (> 130 /min for 30 s) not within 20 s
    lines = [
        encode(
            Vitals(
                patient="p-1",
                device="hrs-1",
                gateway="gw-1",
                signal=Signal.HEART_RATE,
                seq=i,
                samples=(Sample(t=T0 + i * 1000, v=80.0 if i < 5 else 150.0),),
            )
        ).decode()
        for i in range(25)
    ]
    path = tmp_path / "hr.jsonl"
    path.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli([str(path), "--profile", "arrhythmia", "--no-flush"], capsys)
    assert (code, [(o["rule"], o["t"]) for o in out]) == (0, [("hr_high", T0 + 10_000)])
    _, default_out, _ = run_cli([str(path), "--no-flush"], capsys)
    assert default_out == []
    with pytest.raises(SystemExit):
        replay_main([str(path), "--profile", "arrhythmia", "--rules", str(path)])


def test_a_vitals_batch_line_is_replayed_as_its_series() -> None:
    single = [
        Vitals(patient="p-1", device="ox-1", gateway="gw-1", signal=signal, seq=seq, samples=(Sample(T0, value),))
        for seq, (signal, value) in enumerate([(Signal.SPO2, 97.0), (Signal.PULSE_RATE, 70.0)])
    ]
    batch = VitalsBatch(
        patient="p-1",
        device="ox-1",
        gateway="gw-1",
        series=tuple(Series(signal=v.signal, seq=v.seq, samples=v.samples) for v in single),
    )
    topic = "wardwatch/v1/vitals/ward-x/gw-1/p-1/ox-1/batch"
    lines = [json.dumps({"topic": topic, "payload": json.loads(encode(batch))}), encode(batch).decode()]
    stats = ReplayStats()
    assert list(read_inputs(lines, "ward-a", stats, None)) == [
        *(("ward-x", v) for v in single),
        *(("ward-a", v) for v in single),
    ]
    assert stats.rejected == 0
