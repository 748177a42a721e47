"""The causal device model: no look-ahead, strap and oximeter reporting conventions, exact RR intervals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from wardwatch.core.gatt import DeviceSensorStatus, MeasurementStatus
from wardwatch.core.recordings import RecordingError, recording_model
from wardwatch.core.schema import DeviceStatus, Signal, Vitals, WireMessage, encode
from wardwatch.firmware_sim.detectors import (
    PULSE_MAX_DELAY_S,
    QRS_MAX_DELAY_S,
    detect_pulses_causal,
    detect_qrs_causal,
)
from wardwatch.firmware_sim.recordings import read_wfdb
from wardwatch.firmware_sim.reporting import NO_BEAT_S, flat_seconds, oximeter_reports, report_rate, strap_reports

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
RECORDS = DATA / "challenge2015-dev" / "records"
needs_data = pytest.mark.skipif(not RECORDS.is_dir(), reason="shared recordings not available")
START_MS = 1_700_000_000_000
FS = 250.0


def _stamp(message: WireMessage) -> int:
    if isinstance(message, DeviceStatus):
        return message.t
    assert isinstance(message, Vitals)
    return message.samples[-1].t


def _up_to(messages: list[WireMessage], t_s: float) -> list[bytes]:
    return [encode(m) for m in messages if _stamp(m) <= START_MS + t_s * 1000]


def _synthetic_ecg(
    rate_bpm: float, seconds: float, *, stop_s: float | None = None, noise: float = 0.02
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """A lead-II-like ECG (QRS and T wave) with noise and baseline wander; beats stop at ``stop_s``."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * FS)) / FS
    x = rng.normal(0.0, noise, t.size) + 0.1 * np.sin(2 * np.pi * 0.3 * t)
    beats = np.arange(0.5, seconds if stop_s is None else stop_s, 60.0 / rate_bpm)
    for b in beats:
        x += np.exp(-0.5 * ((t - b) / 0.012) ** 2) - 0.15 * np.exp(-0.5 * ((t - b - 0.03) / 0.01) ** 2)
        x += 0.25 * np.exp(-0.5 * ((t - b - 0.3) / 0.05) ** 2)
    return x, beats


@needs_data
@pytest.mark.parametrize("record", ["b299l", "b841l", "t117l", "t469l"])
def test_stream_up_to_t_is_the_same_whether_cut_at_t_or_not(record: str) -> None:
    model = recording_model("wfdb")
    path = RECORDS / f"{record}.hea"
    whole = model.render_record(path, start_ms=START_MS)
    for t_s in (37.5, 150.0, 299.5, 300.0):
        cut = model.render_record(path, until_s=t_s, start_ms=START_MS)
        assert _up_to(cut, t_s) == _up_to(whole, t_s), f"{record}: stream before {t_s} s depends on later signal"
        assert len(_up_to(cut, t_s)) > 0


@needs_data
@pytest.mark.parametrize("record", ["b299l", "t469l"])
def test_detections_are_decided_within_the_delay_bound_from_past_signal_only(record: str) -> None:
    waves = read_wfdb(RECORDS / f"{record}.hea")
    assert waves.ecg is not None
    assert waves.pleth is not None
    fs = waves.fs
    for detect, signal, bound in (
        (detect_qrs_causal, waves.ecg, QRS_MAX_DELAY_S),
        (detect_pulses_causal, waves.pleth, PULSE_MAX_DELAY_S),
    ):
        whole = detect(signal, fs)
        assert np.all(whole.decided >= whole.beats)
        assert np.all(whole.decided - whole.beats <= bound * fs)
        for n in (int(61.3 * fs), int(200 * fs)):
            part = detect(signal[:n], fs)
            known = whole.decided < n  # what the firmware had decided when the cut record ends
            assert np.array_equal(part.beats, whole.beats[known])
            assert np.array_equal(part.decided, whole.decided[known])


def test_no_beats_with_contact_reports_zero_with_contact_and_no_rr() -> None:
    ecg, beats = _synthetic_ecg(75, 40, stop_s=20)
    qrs = detect_qrs_causal(ecg, FS)
    assert qrs.beats.size == beats.size  # nothing is found in the noise after the last beat
    reports = strap_reports(qrs.beats / FS, qrs.decided / FS, 40, np.ones(40, np.bool_))
    last_beat = float(beats[-1])
    quiet = np.arange(40) + 1 - last_beat > NO_BEAT_S + QRS_MAX_DELAY_S
    assert np.all(reports.hr[quiet] == 0)
    assert np.all(reports.contact[quiet])
    assert reports.rr_offsets[-1] == reports.rr_offsets[int(np.ceil(last_beat + QRS_MAX_DELAY_S))]  # no RR after
    assert np.all((reports.hr[5:19] >= 74) & (reports.hr[5:19] <= 75))  # 75 /min, floored on the 1/1024 s grid


def test_lost_contact_reports_contact_false_and_no_rr_across_the_gap() -> None:
    beats = np.arange(0.5, 30.0, 1.0)  # 60 /min, decided on the beat
    contact = np.ones(30, np.bool_)
    contact[10:13] = False
    reports = strap_reports(beats, beats, 30, contact)
    assert not reports.contact[10:13].any()
    assert np.all(reports.hr[10:13] == 0)
    rr = [reports.rr_ticks[reports.rr_offsets[k] : reports.rr_offsets[k + 1]].tolist() for k in range(30)]
    assert all(r == [1024] for r in rr[5:10])
    assert rr[13] == []  # the first beat after the gap opens no RR with a beat before it
    assert rr[14] == [1024]


def test_flat_ecg_is_contact_lost() -> None:
    model_input = np.concatenate((_synthetic_ecg(70, 10)[0], np.full(int(5 * FS), 0.3), np.full(int(5 * FS), np.nan)))
    flat = flat_seconds(model_input, FS, 20)
    assert not flat[:10].any()
    assert flat[10:].all()


def test_rr_intervals_are_exact_on_the_1024_grid_and_sent_when_decided() -> None:
    rng = np.random.default_rng(3)
    beats = np.cumsum(rng.uniform(0.4, 1.6, 60))
    decided = beats + 0.31
    seconds = int(decided[-1]) + 1
    reports = strap_reports(beats, decided, seconds, np.ones(seconds, np.bool_))
    ticks = np.rint(beats * 1024).astype(np.int64)
    assert reports.rr_ticks.tolist() == np.diff(ticks).tolist()
    assert int(reports.rr_ticks.sum()) == int(ticks[-1] - ticks[0])  # no drift
    for k, when in enumerate(np.floor(decided[1:]).astype(int)):
        assert reports.rr_offsets[when] <= k < reports.rr_offsets[when + 1]


def test_heart_rate_is_the_mean_of_the_last_four_rr_and_never_rounded_across_a_limit() -> None:
    assert report_rate([39.6, 40.0, 40.4, 140.4, 140.0, 89.5, 90.2]).tolist() == [39, 40, 40, 141, 140, 89, 91]
    # four RR summing to 4 * 60/39.6 s: the mean is 39.6 /min, reported below 40
    rr = 60.0 / 39.6
    beats = 0.5 + rr * np.arange(8)
    reports = strap_reports(beats, beats, 12, np.ones(12, np.bool_))
    assert reports.hr[int(beats[4])] == 39
    # 60 -> 120 /min: after four beats at the new rate the report is exactly the new rate
    step = np.concatenate((np.arange(0.5, 10.0, 1.0), 9.5 + 0.5 * np.arange(1, 9)))
    reports = strap_reports(step, step, 14, np.ones(14, np.bool_))
    assert reports.hr[int(step[10 + 3])] == 120


def test_oximeter_reports_probe_off_acquiring_and_no_pulse() -> None:
    seconds = 40
    pulses = np.arange(0.3, 15.0, 0.8)  # 75 /min for 15 s, then none
    pleth = np.ones(int(seconds * FS))
    off = np.zeros(seconds, np.bool_)
    off[30:] = True
    reports = oximeter_reports(pulses, pulses + 0.2, np.full(pulses.size, 0.1), pleth, FS, seconds, off)
    assert reports.pulse_rate[12] == 75
    assert reports.measurement_status[12] == 0
    assert reports.measurement_status[3] & MeasurementStatus.early_estimated_data
    no_pulse = np.arange(24, 30)  # more than 8 s after the last pulse, probe on
    assert np.all(reports.pulse_rate[no_pulse] == 0)
    assert np.all(reports.device_sensor_status[no_pulse] & DeviceSensorStatus.nonpulsatile_signal_detected)
    assert np.all(np.isnan(reports.pulse_rate[30:]))
    assert np.all(reports.device_sensor_status[30:] & DeviceSensorStatus.sensor_unconnected_to_user)
    assert np.all(reports.measurement_status[30:] & MeasurementStatus.measurement_unavailable)


@needs_data
def test_replayed_record_sends_rr_that_add_up_to_the_heart_rate() -> None:
    messages = recording_model("wfdb").render_record(RECORDS / "b299l.hea", until_s=60, start_ms=START_MS)
    rr = [s.v for m in messages if isinstance(m, Vitals) and m.signal == Signal.RR_INTERVAL for s in m.samples]
    hr = [m.samples[0].v for m in messages if isinstance(m, Vitals) and m.signal == Signal.HEART_RATE]
    assert len(hr) == 60
    assert all(v is not None for v in rr)
    ticks = sum(round(float(v) * 1024) for v in rr[-4:] if v is not None)
    assert hr[-1] == report_rate([60.0 * 1024 * 4 / ticks])[0]


def test_a_strap_at_39_6_per_minute_reports_below_40() -> None:
    ecg, _ = _synthetic_ecg(39.6, 60)
    qrs = detect_qrs_causal(ecg, FS)
    reports = strap_reports(qrs.beats / FS, qrs.decided / FS, 60, np.ones(60, np.bool_))
    assert np.all(reports.hr[15:] == 39)  # a rounded 4 s mean would have said 40 ("not below 40")


def test_a_record_without_ecg_or_pleth_is_refused_with_a_reason(tmp_path: Path) -> None:
    import wfdb

    signal = np.sin(np.linspace(0, 60, 2500))[:, None]
    wfdb.wrsamp("abp", fs=250, units=["mmHg"], sig_name=["ABP"], p_signal=signal, write_dir=str(tmp_path))
    with pytest.raises(RecordingError, match="no ECG lead"):
        recording_model("wfdb").render_record(tmp_path / "abp.hea")


@needs_data
def test_search_back_does_not_take_the_t_wave_of_the_beat_before_a_pause() -> None:
    # t469l, 284-300 s: tall T waves 0.27 s after each R; pauses trigger the search-back
    waves = read_wfdb(RECORDS / "t469l.hea")
    assert waves.ecg is not None
    beats = detect_qrs_causal(waves.ecg[: int(300 * waves.fs)], waves.fs).beats / waves.fs
    window = beats[(beats >= 284) & (beats <= 300)]
    assert window.size >= 20
    assert float(np.min(np.diff(window))) > 0.3
