"""What a strap's and an oximeter's firmware report each second from the beats they detected.

Notification ``k`` (sent at the end of second ``k``) uses only beats *decided* by then (see
:class:`~wardwatch.firmware_sim.detectors.Detections`) and only signal before the end of second ``k``,
so the reports are causal and the same whether the record goes on or not.

Strap (0x2A37), as chest straps report it:

* **RR intervals** exact on the wire's 1/1024 s grid: beat times are quantised to 1/1024 s and the RR
  ticks are their differences, so the ticks add up to the true time between beats (no drift). An RR is
  sent in the notification of the second in which its closing beat was decided; no RR spans a loss of
  skin contact.
* **Heart rate** = 60 / mean of the last :data:`HR_BEATS` RR intervals (a beat-count window, as straps
  smooth: 1.6 s of signal at 150 /min, 6 s at 40 /min; the RR intervals themselves carry beat-to-beat
  detail for beat-based rules).
* **Rounding toward the alarm side** (:func:`report_rate`): the characteristic is an integer, and
  rounding to nearest would turn a mean of 39.6 into 40 (not "< 40") and 140.4 into 140 (not "> 140").
  Below :data:`ALARM_SIDE_SPLIT_BPM` the rate is floored, from it on ceiled, so a strict limit on
  either side (``< low``, ``> high``, integer limits) is crossed by the report exactly when the mean
  crosses it; a non-strict limit (``<= 40``) may be met by up to 1 /min early, which is the safe side.
* **No beat** for :data:`NO_BEAT_S` with skin contact: heart rate 0, contact true, no RR (asystole is
  visible). Also 0 after contact is (re)gained until the first RR, which takes about 2-3 s.
* **Contact lost** (flat or missing ECG in that second): contact false, heart rate 0.

Oximeter (0x2A5F):

* **Pulse rate** = 60 / mean of the pulse intervals ending in the last :data:`PR_WINDOW_S` (oximeters
  average over about 8 s), the same rounding toward the alarm side.
* **Perfusion** (pulse amplitude index) = median pulse rise over mean signal level, last 8 s, in %.
* Probe off (flat or missing PLETH): every value NaN, ``measurement_unavailable`` and
  ``sensor_unconnected_to_user``. Probe on but no pulse interval in the window: while acquiring (the
  first :data:`PR_WINDOW_S` after the probe went on) values NaN with ``measurement_unavailable``;
  later pulse rate 0, perfusion 0, SpO2 NaN, with ``nonpulsatile_signal_detected`` (no pulse seen —
  the oximeter cannot tell asystole from a poor signal, so it flags its reading as poor signal).
  Values measured in the first :data:`PR_WINDOW_S` after the probe went on carry ``early_estimated_data``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from wardwatch.core.gatt import DeviceSensorStatus, MeasurementStatus

__all__ = [
    "ALARM_SIDE_SPLIT_BPM",
    "HR_BEATS",
    "NO_BEAT_S",
    "PR_WINDOW_S",
    "OximeterReports",
    "StrapReports",
    "flat_seconds",
    "oximeter_reports",
    "report_rate",
    "strap_reports",
]

FArray = npt.NDArray[np.float64]
IArray = npt.NDArray[np.int64]
BArray = npt.NDArray[np.bool_]

HR_BEATS: Final = 4  # the strap's heart rate is the mean of the last 4 RR intervals
NO_BEAT_S: Final = 4.0  # no beat for this long with contact: heart rate 0 (the CinC asystole definition is 4 s)
PR_WINDOW_S: Final = 8.0  # the oximeter's pulse-rate averaging window
ALARM_SIDE_SPLIT_BPM: Final = 90.0  # floor below, ceil from here on: every low limit is < 90, every high limit >= 90
TICKS_PER_S: Final = 1024
MAX_RR_TICKS: Final = 0xFFFF  # the RR field is a uint16 of 1/1024 s


def report_rate(rate: npt.ArrayLike) -> IArray:
    """Integer rate for the wire, rounded toward the alarm side (see the module doc); NaN becomes 0."""
    r = np.nan_to_num(np.asarray(rate, np.float64), nan=0.0)
    rounded = np.where(r < ALARM_SIDE_SPLIT_BPM, np.floor(r), np.ceil(r))
    result: IArray = np.clip(rounded, 0, 0xFFFF).astype(np.int64)
    return result


def flat_seconds(signal: FArray, fs: float, seconds: int) -> BArray:
    """Seconds whose samples are all missing or flat (contact lost / probe off); each uses only its own samples."""
    bounds = np.floor(np.arange(seconds + 1) * fs).astype(np.int64)
    out = np.ones(seconds, np.bool_)
    if int(fs) == fs and bounds[-1] <= signal.size:
        per = signal[: bounds[-1]].reshape(seconds, int(fs))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            spread = np.nan_to_num(np.nanstd(per, axis=1), nan=0.0)
        result: BArray = spread < 1e-6
        return result
    for k in range(seconds):
        segment = signal[bounds[k] : bounds[k + 1]]
        finite = segment[np.isfinite(segment)]
        out[k] = finite.size == 0 or float(np.std(finite)) < 1e-6
    return out


def _since_lost(lost: BArray) -> IArray:
    """For each second, the last second <= it with ``lost`` true (-1 if none)."""
    index = np.where(lost, np.arange(lost.size), -1)
    result: IArray = np.maximum.accumulate(index) if lost.size else index.astype(np.int64)
    return result


@dataclass(frozen=True, slots=True)
class StrapReports:
    """Per second: heart rate (integer), contact; RR ticks with offsets (RR of second k: ticks[off[k]:off[k+1]])."""

    hr: IArray
    contact: BArray
    rr_ticks: IArray
    rr_offsets: IArray


def strap_reports(beats_s: npt.ArrayLike, decided_s: npt.ArrayLike, seconds: int, contact: BArray) -> StrapReports:
    """A strap's notifications from beat times and the times the firmware decided them (both in s)."""
    beats = np.asarray(beats_s, np.float64)
    decided = np.maximum.accumulate(np.maximum(np.asarray(decided_s, np.float64), beats)) if beats.size else beats
    emitted = np.floor(decided).astype(np.int64)  # notification that carries the beat
    keep = emitted < seconds
    beats, emitted = beats[keep], emitted[keep]
    lost_upto = _since_lost(~contact)
    ticks_at = np.rint(beats * TICKS_PER_S).astype(np.int64)
    # an RR closes at beat k; valid if contact held from the opening beat's second to the closing beat's notification
    open_second = np.floor(beats[:-1]).astype(np.int64)
    close_second = emitted[1:]
    rr = np.diff(ticks_at)
    valid = (lost_upto[close_second] < open_second) & (rr > 0) & (rr <= MAX_RR_TICKS) if rr.size else rr.astype(bool)
    rr, rr_emitted = rr[valid], close_second[valid]
    offsets = np.searchsorted(rr_emitted, np.arange(seconds + 1), side="left").astype(np.int64)

    k = np.arange(seconds)
    hi = offsets[1:]  # RR intervals sent up to and including second k
    since = np.searchsorted(rr_emitted, lost_upto, side="right")  # first RR after the last contact loss
    lo = np.maximum(hi - HR_BEATS, since)
    count = np.maximum(hi - lo, 0)
    cum = np.concatenate(([0], np.cumsum(rr)))
    total = cum[hi] - cum[np.minimum(lo, hi)]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(count > 0, 60.0 * TICKS_PER_S * count / np.where(total > 0, total, 1), 0.0)
    # no beat for NO_BEAT_S: heart rate 0 (the last beat decided by second k, and after the last contact loss)
    last = np.searchsorted(emitted, k, side="right") - 1
    last_time = np.concatenate(([-np.inf], beats))[last + 1]
    quiet = (k + 1 - last_time > NO_BEAT_S) | (last_time < lost_upto + 1)
    hr = report_rate(np.where(quiet | ~contact, 0.0, rate))
    return StrapReports(hr, contact.copy(), rr.astype(np.int64), offsets)


@dataclass(frozen=True, slots=True)
class OximeterReports:
    """Per second: pulse rate and perfusion (NaN = not sent), PLX status words."""

    pulse_rate: FArray
    perfusion: FArray  # %, one decimal on the wire
    measurement_status: IArray
    device_sensor_status: IArray
    valid: BArray  # a pulse was measured (SpO2 can be reported)


def oximeter_reports(
    pulses_s: npt.ArrayLike,
    decided_s: npt.ArrayLike,
    rises: npt.ArrayLike,
    pleth: FArray,
    fs: float,
    seconds: int,
    off: BArray,
) -> OximeterReports:
    """An oximeter's notifications from the pulses it detected (times and decisions in s, rises in signal units)."""
    pulses = np.asarray(pulses_s, np.float64)
    emitted = np.floor(np.asarray(decided_s, np.float64)).astype(np.int64)
    rise = np.asarray(rises, np.float64)
    lost_upto = _since_lost(off)
    k = np.arange(seconds)
    # intervals closing at pulse j, valid if the probe stayed on from the opening pulse on
    open_second = np.floor(pulses[:-1]).astype(np.int64)
    close_emitted = emitted[1:]
    ok = close_emitted < seconds
    intervals = np.diff(pulses)
    valid = np.zeros(intervals.size, np.bool_)
    valid[ok] = lost_upto[close_emitted[ok]] < open_second[ok]
    ends, intervals, iv_emitted = pulses[1:][valid], intervals[valid], close_emitted[valid]
    hi = np.searchsorted(iv_emitted, k, side="right")
    lo = np.maximum(np.searchsorted(ends, k + 1 - PR_WINDOW_S, side="right"), np.searchsorted(ends, lost_upto + 1))
    count = np.maximum(hi - lo, 0)
    cum = np.concatenate(([0.0], np.cumsum(intervals)))
    total = cum[hi] - cum[np.minimum(lo, hi)]
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(count > 0, 60.0 * count / np.where(total > 0, total, 1.0), np.nan)

    x = np.abs(np.nan_to_num(pleth, nan=0.0))
    level_cum = np.concatenate(([0.0], np.cumsum(x)))
    end = np.minimum(np.floor((k + 1) * fs).astype(np.int64), x.size)
    start = np.maximum(np.floor((k + 1 - PR_WINDOW_S) * fs).astype(np.int64), 0)
    level = (level_cum[end] - level_cum[start]) / np.maximum(end - start, 1)
    perfusion = np.full(seconds, np.nan)
    p_hi = np.searchsorted(emitted, k, side="right")
    p_lo = np.searchsorted(pulses, k + 1 - PR_WINDOW_S, side="right")
    for second in np.flatnonzero(count > 0).tolist():
        recent = rise[p_lo[second] : p_hi[second]]
        if recent.size and level[second] > 0:
            perfusion[second] = 100.0 * float(np.median(recent)) / float(level[second])

    on_for = k - lost_upto  # seconds since the probe went on
    measured = (count > 0) & ~off
    acquiring = ~measured & ~off & (on_for <= PR_WINDOW_S)
    no_pulse = ~measured & ~off & ~acquiring
    pulse_rate = np.where(measured, report_rate(rate).astype(np.float64), np.nan)
    pulse_rate[no_pulse] = 0.0
    perfusion = np.where(measured, np.nan_to_num(perfusion, nan=0.0), np.nan)
    perfusion[no_pulse] = 0.0
    ms = np.zeros(seconds, np.int64)
    dss = np.zeros(seconds, np.int64)
    ms[off | acquiring] = int(MeasurementStatus.measurement_unavailable)
    ms[measured & (on_for <= PR_WINDOW_S)] = int(MeasurementStatus.early_estimated_data)
    dss[off] = int(DeviceSensorStatus.sensor_unconnected_to_user)
    dss[no_pulse] = int(DeviceSensorStatus.nonpulsatile_signal_detected)
    return OximeterReports(pulse_rate, perfusion, ms, dss, measured)
