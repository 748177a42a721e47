"""The device firmware model on real recordings: QRS/pulse detection accuracy and replay streams."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from wardwatch.core.schema import Quality, Signal, Vitals
from wardwatch.firmware_sim.detectors import compare, detect_pulses, detect_qrs, firmware_heart_rate
from wardwatch.firmware_sim.model import OximeterTrack, StrapTrack
from wardwatch.firmware_sim.recordings import (
    Waveforms,
    beats_from_vitaldb,
    read_bidmc_csv,
    read_wfdb,
    strap_track_from_beats,
    tracks_from_numerics,
    tracks_from_waveforms,
)
from wardwatch.firmware_sim.render import render_messages
from wardwatch.firmware_sim.scenario import PatientSpec, scenario_from_dict

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared recordings not available")
SEGMENT_S = 60


def _patient() -> tuple[PatientSpec, int]:
    raw = {
        "name": "r",
        "duration": 1,
        "patients": [
            {
                "id": "p-rec",
                "devices": [{"kind": "heart_rate_strap", "id": "hrs-rec"}, {"kind": "pulse_oximeter", "id": "plx-rec"}],
            }
        ],
    }
    scenario = scenario_from_dict(raw)
    return scenario.patients[0], scenario.start_ms


def _reference(ecg: npt.NDArray[np.float64], fs: float) -> npt.NDArray[np.float64]:
    import warnings

    from wfdb import processing

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(processing.xqrs_detect(np.nan_to_num(ecg), fs, verbose=False), dtype=np.float64)


def _segment(waves: Waveforms, seconds: int) -> Waveforms:
    n = int(seconds * waves.fs)
    return Waveforms(
        waves.name,
        waves.fs,
        None if waves.ecg is None else waves.ecg[:n],
        waves.ecg_lead,
        None if waves.pleth is None else waves.pleth[:n],
    )


@needs_data
@pytest.mark.parametrize(
    "record",
    ["bidmc01/bidmc_01_Signals.csv", "challenge2015-dev/records/b299l.hea", "challenge2015-dev/records/t110s.hea"],
)
def test_qrs_detection_hr_within_tolerance(record: str) -> None:
    path = DATA / record
    waves = _segment(read_bidmc_csv(path) if path.suffix == ".csv" else read_wfdb(path), SEGMENT_S)
    assert waves.ecg is not None
    detected = detect_qrs(waves.ecg, waves.fs) / waves.fs
    reference = _reference(waves.ecg, waves.fs) / waves.fs
    result = compare(waves.name, detected, reference, SEGMENT_S, tolerance=0.15)
    assert result.sensitivity >= 0.98, result
    assert result.ppv >= 0.98, result
    assert result.hr_mae_bpm <= 2.0, result  # stated tolerance: firmware HR within 2 bpm of the reference


@needs_data
def test_pulse_detection_tracks_ecg_heart_rate() -> None:
    waves = _segment(read_bidmc_csv(DATA / "bidmc01" / "bidmc_01_Signals.csv"), SEGMENT_S)
    assert waves.pleth is not None
    assert waves.ecg is not None
    pulses = detect_pulses(waves.pleth, waves.fs) / waves.fs
    pr = firmware_heart_rate(pulses, SEGMENT_S, window=8.0)
    hr = firmware_heart_rate(_reference(waves.ecg, waves.fs) / waves.fs, SEGMENT_S, window=8.0)
    both = np.isfinite(pr) & np.isfinite(hr)
    both[:8] = False
    assert float(np.mean(np.abs(pr[both] - hr[both]))) <= 5.0


@needs_data
def test_wfdb_replay_streams() -> None:
    patient, start = _patient()
    waves = _segment(read_bidmc_csv(DATA / "bidmc01" / "bidmc_01_Signals.csv"), SEGMENT_S)
    tracks = tracks_from_waveforms(waves, patient, start)
    strap = next(t for t in tracks if isinstance(t, StrapTrack))
    oxi = next(t for t in tracks if isinstance(t, OximeterTrack))
    assert waves.ecg is not None
    reference_hr = firmware_heart_rate(_reference(waves.ecg, waves.fs) / waves.fs, SEGMENT_S)
    ok = np.isfinite(reference_hr)
    ok[:5] = False
    assert float(np.mean(np.abs(strap.hr[ok] - reference_hr[ok]))) <= 2.0
    assert np.nanmedian(oxi.pulse_rate) == pytest.approx(np.median(strap.hr[5:]), abs=5)
    messages = [m for m in render_messages(tracks) if isinstance(m, Vitals)]
    assert {m.signal for m in messages} >= {Signal.HEART_RATE, Signal.RR_INTERVAL, Signal.PULSE_RATE, Signal.SPO2}


@needs_data
def test_vitaldb_beats_become_rr_intervals() -> None:
    beats, bad = beats_from_vitaldb(DATA / "vitaldb-arrdb" / "vitaldb_arrdb_LabelFile.tar.xz", 1023)
    assert beats.size > 500
    assert bad.size == beats.size
    patient, start = _patient()
    beats = beats[beats < 120]
    track = strap_track_from_beats(patient, patient.devices[0], start, beats, 120)
    sent = np.concatenate([np.asarray(track.reading(i).rr_ticks) for i in range(120)]) / 1024
    assert np.allclose(sent, np.diff(beats)[: sent.size], atol=1 / 1024)


@needs_data
def test_numerics_gaps_become_sensor_off() -> None:
    patient, start = _patient()
    tracks = tracks_from_numerics(DATA / "mimic2-numerics" / "s25047-2704-05-04-10-44n.hea", patient, start)
    oxi = next(t for t in tracks if isinstance(t, OximeterTrack))
    assert oxi.seconds == 72 * 60
    # the first two minutes have SpO2 = 0 (probe off) in the record
    messages = [m for m in render_messages(tracks) if isinstance(m, Vitals) and m.signal == Signal.SPO2]
    first = messages[0].samples[0]
    assert first.v is None
    assert Quality.SENSOR_UNCONNECTED in first.q
    later = [m.samples[0].v for m in messages[200:260]]
    assert all(v is not None and 85 <= v <= 100 for v in later)
