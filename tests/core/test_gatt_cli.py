"""``wardwatch gatt`` subcommand, called through ``gatt_main`` directly."""

from __future__ import annotations

import json

import pytest

from wardwatch.core.gatt.cli import gatt_main, parse_hex
from wardwatch.core.profiles import CODECS


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_decode_heart_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(["decode", "2a37", "1e46640033036603"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    out = json.loads(captured.out)
    assert out["characteristic"] == "Heart Rate Measurement"
    assert out["uuid"] == "00002a37-0000-1000-8000-00805f9b34fb"
    assert out["heart_rate"] == 70
    assert out["sensor_contact"] is True
    assert out["energy_expended"] == 100
    assert out["rr_intervals"] == pytest.approx([0.7998, 0.8496], abs=1e-4)


@pytest.mark.parametrize(
    "argv",
    [
        ["decode", "0x2A5F", "10 5f00 3c00 34f0"],
        ["decode", "2A5F", "10:5f:00:3c:00:34:f0"],
        ["decode", "00002a5f-0000-1000-8000-00805f9b34fb", "10", "5f00", "3c00", "34f0"],
        ["decode", "2a5f", "0x105f003c0034f0"],
    ],
)
def test_decode_plx_hex_forms(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spo2"] == 95.0
    assert out["pulse_rate"] == 60.0
    assert out["pulse_amplitude_index"] == pytest.approx(5.2)
    assert out["measurement_status"] is None


def test_decode_absent_and_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(["decode", "2a5f", "0c ff07 4800 0040 000800"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spo2"] is None
    assert out["spo2_absent_reason"] == "nan"
    assert out["measurement_status"] == ["questionable_measurement_detected"]
    assert out["device_sensor_status"] == ["sensor_unconnected_to_user"]


def test_decode_pretty(capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(["decode", "--pretty", "2a19", "57"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") > 2
    assert json.loads(out)["battery_level"] == 87


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decode", "2a37", "zz"], "malformed hex 'zz'"),
        (["decode", "2a37", "1e4"], "odd number of hex digits"),
        (["decode", "2a37", "2046"], "reserved flag bits 5-7 set"),
        (["decode", "2a37", ""], "truncated"),
        (["decode", "2a5e", "01 6200 4b00 e8070d01000000"], "month must be in 1..12"),
        (["decode", "2a99", "00"], "no codec for characteristic 0x2A99"),
        (["decode", "heart", "00"], "not a Bluetooth SIG UUID"),
        (["decode", "2a37"], "the following arguments are required: hex"),
        (["frobnicate"], "invalid choice"),
        ([], "the following arguments are required"),
    ],
)
def test_errors_exit_2_with_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = _one_error_line(captured.err)
    assert line.startswith("wardwatch gatt: error: ")
    assert message in line


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "0x2A37  00002a37-0000-1000-8000-00805f9b34fb  Heart Rate Measurement" in out
    for uuid in ("2A19", "2A24", "2A25", "2A26", "2A27", "2A28", "2A29", "2A38", "2A52", "2A5E", "2A5F", "2A60"):
        assert f"0x{uuid}" in out
    assert len(out.splitlines()) == len(CODECS) == 21


def test_decode_blood_pressure_and_temperature(capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(["decode", "2a35", "1e 7800 5000 5a00 e807050f0c1e00 4800 01 0100"]) == 0
    bp = json.loads(capsys.readouterr().out)
    assert bp["characteristic"] == "Blood Pressure Measurement"
    assert (bp["systolic"], bp["diastolic"], bp["mean_arterial_pressure"]) == (120.0, 80.0, 90.0)
    assert bp["status"] == ["body_movement"]
    assert bp["timestamp"] == "2024-05-15T12:30:00"
    assert gatt_main(["decode", "2a1c", "06 720100ff e807050f0c1e00 02"]) == 0
    temperature = json.loads(capsys.readouterr().out)
    assert (temperature["temperature"], temperature["unit"], temperature["temperature_type"]) == (
        37.0,
        "celsius",
        "body",
    )


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert gatt_main(["--help"]) == 0
    assert "decode" in capsys.readouterr().out


def test_parse_hex() -> None:
    assert parse_hex("1e 46:64-00_33") == bytes.fromhex("1e46640033")
    assert parse_hex("0x1E46") == b"\x1e\x46"
    assert parse_hex("0x1e 0x46") == b"\x1e\x46"
    assert parse_hex("") == b""
    with pytest.raises(ValueError, match="odd number"):
        parse_hex("123")
