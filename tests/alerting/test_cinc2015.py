"""``wardwatch alerting cinc2015``: decisions on real challenge records, scoring, skipped records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from wardwatch.alerting.cinc2015 import Tally, cinc2015_main
from wardwatch.core.recordings import RecordingError, recording_model

DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "challenge2015-dev"


def _model_installed() -> bool:
    try:
        recording_model()
    except RecordingError:
        return False
    return True


needs_data = pytest.mark.skipif(
    not (DEV / "ALARMS").is_file() or not _model_installed(),
    reason="CinC 2015 dev records or the simulator's recording model not available",
)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object], str]:
    code = cinc2015_main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else {}), err


def test_score_is_the_challenge_formula() -> None:
    tally = Tally(tp=14, fp=3, tn=10, fn=0)
    assert tally.as_dict() == {
        "n": 27,
        "tp": 14,
        "fp": 3,
        "tn": 10,
        "fn": 0,
        "tpr": 100.0,
        "tnr": 76.9,
        "score": 88.9,
    }
    assert Tally(tp=13, fp=0, tn=13, fn=1).as_dict()["score"] == round(100 * 26 / 31, 1)  # a miss costs 5
    assert Tally().as_dict()["score"] is None


@needs_data
def test_an_activation_counts_when_it_overlaps_the_window() -> None:
    from wardwatch.alerting.cinc2015 import _active_in

    spans = {"hr_high": [(100, 284.0)], "hr_low": [(290, float("inf"))], "asystole": [(301, 305.0)]}
    rules = frozenset({"hr_high", "hr_low", "asystole"})
    # cleared exactly when the window opens: over; raised after it closes: too late
    assert _active_in(spans, rules, 284, 300) == ["hr_low"]
    assert _active_in(spans, rules, 283, 301) == ["asystole", "hr_high", "hr_low"]


def test_three_dev_records_give_the_decisions_verified_by_hand(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Verified by hand on the strap's RR intervals in 284-300 s (the causal device model of main ba43d09;
    # the same decisions with the earlier whole-record model):
    # b764s (true brady): every RR 1.30-1.94 s (31-46 /min) -> below 40 over 5 beats -> alarm (TP);
    # b841l (false brady): RR 0.94-1.05 s (57-64 /min) -> no alarm (TN);
    # t430s (true tachy): RR 0.30-0.32 s (~190-195 /min) for far more than 17 beats -> alarm (TP),
    # although the oximeter's pulse rate reads 9-60 /min there (the ECG is never withheld).
    records = tmp_path / "records.txt"
    records.write_text("b764s\nb841l\nt430s\n")
    code, doc, _ = run([str(DEV), "--records", str(records), "--profile", "arrhythmia", "--per-record"], capsys)
    assert code == 0
    lines = {line["record"]: line for line in doc["per_record"]}  # type: ignore[attr-defined]
    assert {name: (line["decision"], line["outcome"]) for name, line in lines.items()} == {
        "b764s": (True, "TP"),
        "b841l": (False, "TN"),
        "t430s": (True, "TP"),
    }
    assert lines["b764s"]["rules_in_window"] == ["hr_low_severe"]
    assert lines["t430s"]["rules_in_window"] == ["hr_high"]
    assert lines["t430s"]["oximeter_pr"]["max"] < 100
    types = doc["types"]
    assert types["Bradycardia"] == {  # type: ignore[index]
        "n": 2,
        "tp": 1,
        "fp": 0,
        "tn": 1,
        "fn": 0,
        "tpr": 100.0,
        "tnr": 100.0,
        "score": 100.0,
    }
    assert types["Tachycardia"]["tp"] == 1  # type: ignore[index]
    assert types["Asystole"]["n"] == 0  # type: ignore[index]
    assert doc["baselines"]["never_suppress"]["Bradycardia"]["fp"] == 1  # type: ignore[index]
    assert doc["profile"] == "arrhythmia"
    assert doc["skipped"] == []


@needs_data
def test_an_ecg_lead_without_qrs_since_it_came_back_is_no_asystole_while_the_pleth_pulses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Verified by hand: b835l (false brady) lead II is flat from ~150 s to ~260 s, then 0.03-0.08 mV peak
    # to peak with no QRS up to 300 s; its PLETH pulses at 98-120 /min all along. The strap's contact is
    # back but it has not seen one QRS: strap_no_qrs (check the strap), not asystole -> no alarm (TN).
    records = tmp_path / "records.txt"
    records.write_text("b835l\n")
    code, doc, _ = run([str(DEV), "--records", str(records), "--profile", "arrhythmia", "--per-record"], capsys)
    assert code == 0
    lines: list[dict[str, Any]] = doc["per_record"]  # type: ignore[assignment]
    (line,) = lines
    assert (line["decision"], line["outcome"], line["naive"]) == (False, "TN", "FP")
    assert line["rules_in_window"] == []
    assert line["other_rules_in_window"] == ["strap_no_qrs"]
    assert line["strap_hr"]["no_beat_s"] == 17
    assert line["oximeter_pr"]["min"] >= 90


@needs_data
def test_unreadable_partial_and_unsupported_records_are_reported_and_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("b849l", "b764s"):  # 330 s and 300 s long
        for ext in (".hea", ".mat"):
            shutil.copy(DEV / "records" / f"{name}{ext}", tmp_path / f"{name}{ext}")
    (tmp_path / "garbage.hea").write_text("this is not a WFDB header\n")
    (tmp_path / "ALARMS").write_text(
        "b849l,Bradycardia,0\nb764s,Bradycardia,1\ngarbage,Tachycardia,1\nmissing,Asystole,1\n"
        "v100s,Ventricular_Tachycardia,1\n"
    )
    code, doc, err = run([str(tmp_path), "--until", "310", "--window", "16"], capsys)
    assert code == 0
    assert doc["records"] == 1  # b849l
    skipped = {s["record"]: s["reason"] for s in doc["skipped"]}  # type: ignore[attr-defined]
    assert set(skipped) == {"b764s", "garbage", "missing"}
    assert "partial" in skipped["b764s"]
    assert doc["unsupported"] == {"Ventricular_Tachycardia": 1}
    assert "skipped garbage" in err
    assert doc["profile"] == "virtual-ward"


def test_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run([str(tmp_path)], capsys)
    assert code == 2
    assert "ALARMS" in err
    (tmp_path / "ALARMS").write_text("b1,Bradycardia,maybe\n")
    code, _, err = run([str(tmp_path)], capsys)
    assert (code, "line 1" in err) == (2, True)
    (tmp_path / "ALARMS").write_text("b1,Bradycardia,1\n")
    (tmp_path / "list.txt").write_text("b2\n")
    code, _, err = run([str(tmp_path), "--records", str(tmp_path / "list.txt")], capsys)
    assert (code, "b2" in err) == (2, True)
