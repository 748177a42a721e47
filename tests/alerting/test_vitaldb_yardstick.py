"""``scripts/vitaldb_beat_rules.py``: the CinC episodes it reads from annotated beats, strictly and loosely."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "vitaldb_beat_rules.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vitaldb_beat_rules", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the script's dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _beats(rr: list[float]) -> np.ndarray:
    return np.concatenate(([1.0], 1.0 + np.cumsum(rr)))


def test_five_slow_beats_are_an_episode_by_every_reading() -> None:
    script = _script()
    beats = _beats([1.0] * 5 + [1.6] * 5 + [1.0] * 5)
    strict, loose = script.episodes(beats), script.episodes(beats, loose=True)
    assert strict["brady"] == [(beats[5], beats[10])]
    assert loose["brady"]
    assert loose["brady"][0][0] <= beats[5]
    assert strict["tachy"] == strict["asystole"] == []


def test_bigeminy_is_no_bradycardia_by_any_reading() -> None:
    # a PVC 0.55 s after each beat and a 1.56 s compensatory pause: 57 /min on average
    beats = _beats([0.55, 1.56] * 20)
    script = _script()
    assert script.episodes(beats)["brady"] == []
    assert script.episodes(beats, loose=True)["brady"] == []


def test_a_pause_over_4_s_is_an_asystole_episode() -> None:
    beats = _beats([0.8] * 5 + [4.5] + [0.8] * 5)
    assert _script().episodes(beats)["asystole"] == [(beats[5], beats[6])]
