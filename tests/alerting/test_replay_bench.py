"""The replay benchmark command prints JSON (no speed assertions: benchmarks are commands)."""

from __future__ import annotations

import json

import pytest

from wardwatch.alerting.bench_replay import bench_main


def test_bench_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--patients", "5", "--seconds", "60", "--repeat", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["samples"] > 800
    for key in ("replay_samples_per_s", "replay_with_decode_samples_per_s", "hampel_us_per_sample", "numpy_median7_us"):
        assert report[key] > 0
    assert isinstance(report["meets_target"], bool)
