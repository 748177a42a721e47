"""The `wardwatch` command: dispatch, help, unknown commands, and a missing extra explained without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wardwatch.core.cli import EXIT_MISSING_EXTRA, main

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("gatt", "gateway", "ingest", "alerting", "sim", "bench"):
        assert command in out


def test_unknown_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.fixture(scope="session")
def core_only_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wardwatch wheel and only the core's dependencies (what a bare install gets)."""
    root = tmp_path_factory.mktemp("core-only")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(REPO)],
        check=True,
        timeout=300,
    )
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next(wheels.glob("wardwatch-*.whl"))
    subprocess.run([venv / "bin" / "pip", "install", "-q", str(wheel)], check=True, timeout=300)
    return venv


@pytest.mark.slow
@pytest.mark.parametrize(
    ("command", "extra"), [("gateway", "gateway"), ("ingest", "ingest"), ("alerting", "alerting"), ("sim", "sim")]
)
def test_missing_extra_says_what_to_install(core_only_venv: Path, command: str, extra: str) -> None:
    result = subprocess.run(
        [core_only_venv / "bin" / "wardwatch", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == EXIT_MISSING_EXTRA
    assert f"pip install 'wardwatch[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_core_only_install_decodes_gatt(core_only_venv: Path) -> None:
    """The bare install (no extras) has the core: wheel layout, entry point and GATT CLI work."""
    result = subprocess.run(
        [core_only_venv / "bin" / "wardwatch", "gatt", "decode", "2a37", "1e46640033036603"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert decoded["heart_rate"] == 70


def test_console_script_runs_gatt_decode() -> None:
    """The `wardwatch` script in this environment decodes the example from the Heart Rate profile."""
    result = subprocess.run(
        [Path(sys.executable).parent / "wardwatch", "gatt", "decode", "2a37", "1e46640033036603"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert decoded["heart_rate"] == 70
    assert decoded["sensor_contact"] is True
    assert decoded["energy_expended"] == 100
    assert decoded["rr_intervals"] == pytest.approx([0.7998, 0.8496], abs=1e-4)
