"""Real recordings as device streams, and the device model's accuracy on them.

* WFDB waveform records (ECG and PLETH, 125-250 Hz): the firmware model (:mod:`.detectors`)
  turns ECG into strap notifications and PLETH into oximeter pulse rate and perfusion.
* VitalDB beat annotations: real R-peak times become strap RR intervals and heart rate.
* MIMIC-II numerics (1/min, zeros = sensor off): interpolated to 1 Hz; zeros become sensor-off.

:func:`accuracy_report` measures the QRS detector against a reference detector (wfdb's ``xqrs``)
on records where two reference detectors (``xqrs`` and ``gqrs``) agree, and the PLETH pulse rate
against the ECG heart rate.
"""

from __future__ import annotations

import csv
import io
import math
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from wardwatch.core.recordings import RecordingError
from wardwatch.core.schema import WireMessage

from .detectors import (
    HR_WINDOW_S,
    BeatComparison,
    compare,
    detect_pulses,
    detect_pulses_causal,
    detect_qrs_causal,
    firmware_heart_rate,
    match_beats,
)
from .errors import RecordError
from .model import OximeterTrack, StrapTrack
from .reporting import OximeterReports, flat_seconds, oximeter_reports, strap_reports
from .scenario import DeviceKind, DeviceSpec, PatientSpec

__all__ = [
    "ECG_LEADS",
    "Waveforms",
    "WfdbRecordingModel",
    "accuracy_report",
    "beats_from_vitaldb",
    "read_bidmc_csv",
    "read_wfdb",
    "recording_model",
    "strap_track_from_beats",
    "tracks_from_numerics",
    "tracks_from_waveforms",
]

FArray = npt.NDArray[np.float64]
# The strap has one lead; the record channel that models it is the first of these the record has. A chest
# strap's two electrodes sit left and right on the lower chest, a bipolar lead whose axis lies between lead
# I and lead II, and straps are placed for a tall R wave; lead II (57 of the 69 CinC dev records also have
# a precordial V lead, 1 has lead I) is the monitoring lead with the tallest R wave in most patients and is
# used first. Measured on the 69 CinC 2015 dev records (arrhythmia profile, brady / tachy score): lead II
# first 65.7 / 89.1, V first 68.6 / 80.0 (V misses t114s and rescues b835l, whose lead II has no QRS).
ECG_LEADS: Final = ("II", "I", "III", "V", "MCL", "aVR", "aVL", "aVF", "AVR")


@dataclass(frozen=True, slots=True)
class Waveforms:
    """One record's ECG (first usable lead) and PLETH, either may be missing."""

    name: str
    fs: float
    ecg: FArray | None
    ecg_lead: str
    pleth: FArray | None

    @property
    def seconds(self) -> int:
        """Whole seconds of signal."""
        n = max(len(s) for s in (self.ecg, self.pleth) if s is not None)
        return int(n / self.fs)

    def until(self, seconds: float) -> Waveforms:
        """The record cut at ``seconds`` (as if it ended there)."""
        n = max(0, int(seconds * self.fs))
        return Waveforms(
            self.name,
            self.fs,
            None if self.ecg is None else self.ecg[:n],
            self.ecg_lead,
            None if self.pleth is None else self.pleth[:n],
        )


def read_wfdb(path: str | Path) -> Waveforms:
    """Read a WFDB record (``.hea`` path or record path without extension)."""
    import wfdb

    record_path = str(path)[:-4] if str(path).endswith(".hea") else str(path)
    try:
        record = wfdb.rdrecord(record_path)
    except Exception as exc:  # wfdb raises many kinds
        raise RecordError(f"cannot read WFDB record {record_path!r}: {exc}") from exc
    names = list(record.sig_name)
    signals = np.asarray(record.p_signal, dtype=np.float64)
    lead = next((n for n in ECG_LEADS if n in names), "")
    ecg = signals[:, names.index(lead)] if lead else None
    pleth = signals[:, names.index("PLETH")] if "PLETH" in names else None
    return Waveforms(Path(record_path).name, float(record.fs), ecg, lead, pleth)


def read_bidmc_csv(path: str | Path) -> Waveforms:
    """Read a BIDMC ``bidmc_NN_Signals.csv`` (``Time [s], RESP, PLETH, V, AVR, II``, 125 Hz)."""
    try:
        data = np.genfromtxt(path, delimiter=",", names=True)
    except OSError as exc:
        raise RecordError(f"cannot read {path}: {exc}") from exc
    names = data.dtype.names or ()
    t = data[names[0]]
    fs = round(1.0 / float(np.median(np.diff(t))))
    return Waveforms(Path(path).stem, float(fs), data["II"], "II", data["PLETH"])


def beats_from_vitaldb(archive: str | Path, case_id: int) -> tuple[FArray, npt.NDArray[np.bool_]]:
    """R-peak times (s, from the case's first beat) and bad-signal flags of one VitalDB annotation file."""
    wanted = f"Annotation_file_{case_id}.csv"
    try:
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/" + wanted)), None)
            if member is None:
                raise RecordError(f"{archive}: no annotation file for case {case_id}")
            handle = tar.extractfile(member)
            if handle is None:
                raise RecordError(f"{archive}: {member.name} is not a file")
            text = handle.read().decode("utf-8-sig")
    except (OSError, tarfile.TarError) as exc:
        raise RecordError(f"cannot read {archive}: {exc}") from exc
    rows = list(csv.DictReader(io.StringIO(text)))
    times = np.array([float(r["time_second"]) for r in rows])
    bad = np.array([r["bad_signal_quality"].strip().lower() == "true" for r in rows])
    order = np.argsort(times)
    return times[order] - times[order][0], bad[order]


def strap_track_from_beats(
    patient: PatientSpec,
    device: DeviceSpec,
    start_ms: int,
    beats: npt.ArrayLike,
    seconds: int,
    contact: npt.NDArray[np.bool_] | None = None,
    decided: npt.ArrayLike | None = None,
) -> StrapTrack:
    """A strap track reporting these beats (s) as strap firmware does (:func:`.reporting.strap_reports`).

    ``decided`` are the times the firmware decided each beat (default: at the beat, for beat annotations).
    """
    b = np.asarray(beats, dtype=np.float64)
    d = b if decided is None else np.asarray(decided, dtype=np.float64)
    order = np.argsort(b, kind="stable")
    b, d = b[order], d[order]
    inside = b >= 0
    b, d = b[inside], d[inside]
    contact_arr = np.ones(seconds, np.bool_) if contact is None else np.asarray(contact, np.bool_)
    reports = strap_reports(b, d, seconds, contact_arr)
    battery = np.full(seconds, round(device.battery), np.int64)
    on = np.ones(seconds, np.bool_)
    return StrapTrack(
        patient,
        device,
        start_ms,
        battery,
        on,
        on.copy(),
        np.zeros(seconds, np.bool_),
        reports.hr,
        reports.contact,
        reports.rr_ticks,
        reports.rr_offsets,
    )


def _oximeter_track(
    patient: PatientSpec,
    device: DeviceSpec,
    start_ms: int,
    spo2: FArray,
    pulse_rate: FArray,
    pai: FArray,
    off: npt.NDArray[np.bool_],
) -> OximeterTrack:
    from wardwatch.core.gatt import DeviceSensorStatus, MeasurementStatus

    n = spo2.size
    ms = np.zeros(n, np.int64)
    dss = np.zeros(n, np.int64)
    spo2 = np.clip(np.rint(spo2), 0, 100)
    pr = np.clip(np.rint(pulse_rate), 0, 300)
    pai_t = np.clip(np.rint(pai * 10), 1, 999)
    unknown = off | ~np.isfinite(pr)
    for a in (spo2, pr, pai_t):
        a[unknown] = np.nan
    ms[unknown] = MeasurementStatus.measurement_unavailable
    dss[off] = DeviceSensorStatus.sensor_unconnected_to_user
    battery = np.full(n, round(device.battery), np.int64)
    on = np.ones(n, np.bool_)
    return OximeterTrack(
        patient, device, start_ms, battery, on, on.copy(), np.zeros(n, np.bool_), spo2, pr, pai_t, ms, dss
    )


def tracks_from_waveforms(
    waves: Waveforms, patient: PatientSpec, start_ms: int, *, spo2: float | None = None
) -> list[StrapTrack | OximeterTrack]:
    """Device tracks a strap (ECG) and an oximeter (PLETH) would produce from this record.

    PLETH holds no SpO2 (that needs two wavelengths): the oximeter reports ``spo2`` (default the
    patient's baseline) with the detected pulse rate and a relative perfusion index.
    """
    seconds = waves.seconds
    tracks: list[StrapTrack | OximeterTrack] = []
    for device in patient.devices:
        if device.kind == DeviceKind.HEART_RATE_STRAP and waves.ecg is not None:
            qrs = detect_qrs_causal(waves.ecg, waves.fs)
            contact = ~flat_seconds(waves.ecg, waves.fs, seconds)
            tracks.append(
                strap_track_from_beats(
                    patient, device, start_ms, qrs.beats / waves.fs, seconds, contact, qrs.decided / waves.fs
                )
            )
        elif device.kind == DeviceKind.PULSE_OXIMETER and waves.pleth is not None:
            pulses = detect_pulses_causal(waves.pleth, waves.fs)
            off = flat_seconds(waves.pleth, waves.fs, seconds)
            reports = oximeter_reports(
                pulses.beats / waves.fs,
                pulses.decided / waves.fs,
                pulses.amplitude,
                waves.pleth,
                waves.fs,
                seconds,
                off,
            )
            level = patient.baseline.spo2 if spo2 is None else spo2
            tracks.append(_waveform_oximeter_track(patient, device, start_ms, level, reports))
    return tracks


def _waveform_oximeter_track(
    patient: PatientSpec, device: DeviceSpec, start_ms: int, spo2: float, reports: OximeterReports
) -> OximeterTrack:
    n = reports.pulse_rate.size
    spo2_arr = np.where(reports.valid, float(np.clip(np.rint(spo2), 0, 100)), np.nan)
    pai = np.where(np.isfinite(reports.perfusion), np.clip(np.rint(reports.perfusion * 10), 0, 999), np.nan)
    battery = np.full(n, round(device.battery), np.int64)
    on = np.ones(n, np.bool_)
    return OximeterTrack(
        patient,
        device,
        start_ms,
        battery,
        on,
        on.copy(),
        np.zeros(n, np.bool_),
        spo2_arr,
        reports.pulse_rate.copy(),
        pai,
        reports.measurement_status,
        reports.device_sensor_status,
    )


def tracks_from_numerics(
    record: str | Path, patient: PatientSpec, start_ms: int, rng_seed: int = 0
) -> list[StrapTrack | OximeterTrack]:
    """Device tracks from a MIMIC-II numerics record (HR, PULSE, SpO2 each minute; 0 = sensor off)."""
    import wfdb

    try:
        rec = wfdb.rdrecord(str(record)[:-4] if str(record).endswith(".hea") else str(record))
    except Exception as exc:
        raise RecordError(f"cannot read numerics record {record!r}: {exc}") from exc
    names = list(rec.sig_name)
    sig = np.asarray(rec.p_signal, dtype=np.float64)
    minutes = sig.shape[0]
    seconds = minutes * 60
    t_min = np.arange(minutes) * 60.0
    t = np.arange(seconds, dtype=np.float64) + 1.0

    def channel(name: str) -> tuple[FArray, npt.NDArray[np.bool_]]:
        if name not in names:
            return np.full(seconds, np.nan), np.ones(seconds, np.bool_)
        v = np.nan_to_num(sig[:, names.index(name)], nan=0.0)
        off_min = v <= 0
        good = ~off_min
        if not good.any():
            return np.full(seconds, np.nan), np.ones(seconds, np.bool_)
        values = np.interp(t, t_min[good], v[good])
        off = off_min[np.minimum((t // 60).astype(np.int64), minutes - 1)]
        return values, off

    rng = np.random.default_rng(rng_seed)
    hr, hr_off = channel("HR")
    pulse, pulse_off = channel("PULSE")
    spo2, spo2_off = channel("SpO2")
    tracks: list[StrapTrack | OximeterTrack] = []
    for device in patient.devices:
        if device.kind == DeviceKind.HEART_RATE_STRAP:
            rate = np.where(np.isfinite(hr), hr, patient.baseline.hr) / 60.0
            phase = np.cumsum(rate)
            k = np.arange(math.ceil(phase[0]), math.floor(phase[-1]) + 1, dtype=np.float64)
            beats = np.interp(k, phase, t) + rng.normal(0.0, 0.01, k.size)
            tracks.append(strap_track_from_beats(patient, device, start_ms, beats, seconds, contact=~hr_off))
        else:
            pr = np.where(np.isfinite(pulse), pulse, hr)
            off = spo2_off | pulse_off
            pai = np.full(seconds, patient.baseline.pai)
            tracks.append(_oximeter_track(patient, device, start_ms, spo2, pr + rng.normal(0, 0.5, seconds), pai, off))
    return tracks


# --- accuracy --------------------------------------------------------------------------------------


def _reference_beats(ecg: FArray, fs: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    from wfdb import processing

    x = np.nan_to_num(ecg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        xqrs = processing.xqrs_detect(x, fs, verbose=False)
        gqrs = processing.gqrs_detect(x, fs)
    return np.asarray(xqrs, np.int64), np.asarray(gqrs, np.int64)


def accuracy_report(
    records: Sequence[Waveforms], *, seconds: float | None = None, tolerance: float = 0.15
) -> dict[str, Any]:
    """QRS and pulse detection accuracy on ``records`` (JSON-ready dict).

    Reference beats: wfdb ``xqrs``. A record counts in the summary only where ``xqrs`` and ``gqrs``
    agree (sensitivity and PPV >= 0.95 against each other), so a reference detector's own mistakes
    (e.g. counting tall T waves) do not pass for the device model's. Pulse rate (PLETH) is compared
    with the firmware HR from the reference ECG beats.
    """
    per_record: list[dict[str, Any]] = []
    for waves in records:
        if waves.ecg is None:
            continue
        n = len(waves.ecg) if seconds is None else min(len(waves.ecg), int(seconds * waves.fs))
        ecg = waves.ecg[:n]
        span = int(n / waves.fs)
        found = detect_qrs_causal(ecg, waves.fs)
        det = found.beats
        xqrs, gqrs = _reference_beats(ecg, waves.fs)
        tp, fp, fn = match_beats(xqrs / waves.fs, gqrs / waves.fs, tolerance)
        agree = tp / max(1, tp + fn) >= 0.95 and tp / max(1, tp + fp) >= 0.95
        qrs: BeatComparison = compare(waves.name, det / waves.fs, xqrs / waves.fs, span, tolerance)
        row: dict[str, Any] = {**asdict(qrs), "lead": waves.ecg_lead, "references_agree": agree}
        # what the strap sends (mean of the last 4 RR, rounded toward the alarm side, beats when decided)
        # against the same reporting of the reference beats (decided at the beat): the wire-level error
        contact = np.ones(span, np.bool_)
        sent = strap_reports(det / waves.fs, found.decided / waves.fs, span, contact).hr
        ideal = strap_reports(xqrs / waves.fs, xqrs / waves.fs, span, contact).hr
        both_hr = (sent > 0) & (ideal > 0)
        both_hr[: int(HR_WINDOW_S) + 1] = False
        row["reported_hr_mae_bpm"] = float(np.mean(np.abs(sent[both_hr] - ideal[both_hr]))) if both_hr.any() else None
        if waves.pleth is not None:
            pulses = detect_pulses(waves.pleth[:n], waves.fs) / waves.fs
            pr = firmware_heart_rate(pulses, span, window=8.0)
            hr_ref = firmware_heart_rate(xqrs / waves.fs, span, window=8.0)
            both = np.isfinite(pr) & np.isfinite(hr_ref)
            both[:8] = False
            row["pulse_rate_mae_bpm"] = float(np.mean(np.abs(pr[both] - hr_ref[both]))) if both.any() else None
        per_record.append(row)
    agreed = [r for r in per_record if r["references_agree"]]

    def mean(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        return round(float(np.mean(values)), 3) if values else None

    def median(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
        return round(float(np.median(values)), 3) if values else None

    return {
        "records": len(per_record),
        "records_references_agree": len(agreed),
        "tolerance_s": tolerance,
        "qrs_sensitivity_mean": mean(agreed, "sensitivity"),
        "qrs_ppv_mean": mean(agreed, "ppv"),
        "hr_mae_bpm_mean": mean(agreed, "hr_mae_bpm"),
        "hr_mae_bpm_median": median(agreed, "hr_mae_bpm"),
        "hr_within_5bpm_records": sum(1 for r in agreed if r["hr_mae_bpm"] <= 5.0),
        "reported_hr_mae_bpm_median": median(agreed, "reported_hr_mae_bpm"),
        "reported_hr_mae_bpm_mean": mean(agreed, "reported_hr_mae_bpm"),
        "pulse_rate_mae_bpm_median": median(agreed, "pulse_rate_mae_bpm"),
        "pulse_rate_mae_bpm_mean": mean(agreed, "pulse_rate_mae_bpm"),
        "all_records_hr_mae_bpm_median": median(per_record, "hr_mae_bpm"),
        "per_record": per_record,
    }


class WfdbRecordingModel:
    """The strap and oximeter device model over WFDB records (:class:`wardwatch.core.recordings.RecordingModel`)."""

    def render_record(
        self,
        record: Path,
        *,
        until_s: float | None = None,
        patient: str = "p-replay",
        start_ms: int = 1_700_000_000_000,
    ) -> list[WireMessage]:
        """Vitals and device-status messages for ``record`` cut at ``until_s`` (see the protocol)."""
        from .render import render_messages
        from .scenario import scenario_from_dict

        raw = {
            "name": "replay",
            "duration": 1,
            "patients": [
                {
                    "id": patient,
                    "devices": [
                        {"kind": "heart_rate_strap", "id": f"hrs-{patient}"},
                        {"kind": "pulse_oximeter", "id": f"plx-{patient}"},
                    ],
                }
            ],
        }
        spec = scenario_from_dict(raw).patients[0]
        try:
            waves = read_wfdb(record)
        except RecordError as exc:
            raise RecordingError(str(exc)) from exc
        if waves.ecg is None and waves.pleth is None:
            raise RecordingError(
                f"{record}: no ECG lead ({', '.join(ECG_LEADS)}) and no PLETH signal: nothing a strap or an oximeter "
                "would measure; replay a record that has one of them"
            )
        if until_s is not None:
            waves = waves.until(until_s)
        return list(render_messages(tracks_from_waveforms(waves, spec, start_ms)))


def recording_model() -> WfdbRecordingModel:
    """Entry point of the ``wardwatch.recording_models`` group (name ``wfdb``)."""
    return WfdbRecordingModel()
