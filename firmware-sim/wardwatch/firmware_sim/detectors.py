"""What the device firmware does with its waveform, causally: QRS detection (strap), pulse detection (oximeter).

Both detectors work as firmware does: causal filters from the first sample on, thresholds learned from
the past only, and each beat decided a bounded time after it happened. A detection carries the sample at
which the firmware decided it (``Detections.decided``); that decision uses no sample after it, so the
beats decided up to any time are the same whether the signal stops there or goes on (the causal-cut
invariance that ``tests/firmware_sim/test_causal_model.py`` holds). Whole arrays are filtered at once
for speed: ``sosfilt``/``lfilter`` are sample-recursive, so this equals chunked processing with carried
state, and every windowed operation below looks back or ahead by a stated bound only.

* :func:`detect_qrs_causal` — Pan-Tompkins: 5-15 Hz band-pass, derivative, squaring, 150 ms moving
  integration; candidates are integrator maxima within +-200 ms (decided 200 ms after the peak);
  signal/noise peak levels and the threshold adapt from past candidates; 200 ms refractory period,
  T-wave rejection within 360 ms, and a search-back for a missed beat once 1.66 mean RR passed without
  one. **Delay bound**: a beat is decided at most :data:`QRS_MAX_DELAY_S` (2.5 s) after its R peak
  (normal detections ~0.3 s; a search-back beat up to 2.5 s; beats in the first 2 s learning phase at
  2 s).
* :func:`detect_pulses_causal` — 0.5-8 Hz band-pass of the plethysmogram; systolic peaks are band maxima
  within +-200 ms (decided 200 ms after the peak) whose rise from the preceding 0.4 s trough exceeds a
  quarter of the pulse amplitude seen over the past 30 s; a peak early in the beat with under half the
  recent pulses' rise is the dicrotic wave, not a pulse. **Delay bound**: :data:`PULSE_MAX_DELAY_S`.
* :func:`firmware_heart_rate` and :func:`match_beats` / :func:`compare` give accuracy figures (a 4 s mean,
  the same measure for detected and reference beats).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from scipy.signal import butter, group_delay, lfilter, sos2tf, sosfilt, sosfilt_zi

__all__ = [
    "PULSE_MAX_DELAY_S",
    "QRS_MAX_DELAY_S",
    "BeatComparison",
    "Detections",
    "compare",
    "detect_pulses",
    "detect_pulses_causal",
    "detect_qrs",
    "detect_qrs_causal",
    "firmware_heart_rate",
    "hold_last",
    "match_beats",
]

FArray = npt.NDArray[np.float64]
IArray = npt.NDArray[np.int64]

HR_WINDOW_S: Final = 4.0
FLAT_LEVEL: Final = 1e-6  # signal changes below this are a flat line (no sensor), in signal units

# --- QRS (strap) -----------------------------------------------------------------------------------
QRS_BAND_HZ: Final = (5.0, 15.0)
QRS_INTEGRATION_S: Final = 0.15  # moving-window integrator, about one QRS width
QRS_PEAK_HALF_WINDOW_S: Final = 0.12  # a candidate is the integrator maximum within +-120 ms
QRS_REFRACTORY_S: Final = 0.2
QRS_THRESHOLD_FRACTION: Final = 0.25  # Pan-Tompkins: threshold a quarter of the way from noise to signal level
QRS_LEARN_S: Final = 2.0  # thresholds are learned from the first 2 s before any beat is decided
QRS_T_WAVE_S: Final = 0.36  # a candidate this soon after a beat with half its slope is a T wave
QRS_SEARCH_BACK_RR: Final = 1.66  # search back once this many mean RR passed without a beat
QRS_MAX_DELAY_S: Final = 2.5  # no beat is decided later than this after its R peak
QRS_RR_HISTORY: Final = 8  # the mean RR for the search-back is over the last 8 beats
QRS_RELEARN_S: Final = 3.0  # no beat for 3 s: learn the levels again from the last 2 s (recovers after an artefact)
QRS_MIN_RMS_SLOPE_MV_S: Final = 1.5  # absolute floor: no QRS has an RMS slope below 1.5 mV/s over 150 ms

# --- pulse (oximeter) ------------------------------------------------------------------------------
PULSE_BAND_HZ: Final = (0.5, 8.0)
PULSE_PEAK_HALF_WINDOW_S: Final = 0.2  # systolic peak: the band maximum within +-200 ms (max 300 /min)
PULSE_TROUGH_S: Final = 0.4  # the rise of a pulse is measured from the lowest point in the 0.4 s before it
PULSE_SPREAD_S: Final = 3.0  # the pulse amplitude scale: band max - min over the last 3 s ...
PULSE_SPREAD_HISTORY_S: Final = 30  # ... as the median of that, taken each second over the last 30 s
PULSE_MIN_RISE: Final = 0.25  # a pulse rises at least a quarter of that scale ...
PULSE_DICROTIC_OF_INTERVAL: Final = 0.6  # a peak this early in the beat (share of the last interval) ...
PULSE_MIN_RISE_OF_RECENT: Final = 0.5  # ... with under half the median rise of the last 5 s is the dicrotic wave
PULSE_RECENT_S: Final = 5.0
PULSE_MAX_DELAY_S: Final = PULSE_PEAK_HALF_WINDOW_S


@dataclass(frozen=True, slots=True)
class Detections:
    """Beats a detector found: where each beat is and when the firmware decided it (sample indices)."""

    beats: IArray  # R peak / systolic peak, ascending
    decided: IArray  # the sample at which the beat was decided; beats <= decided <= beats + max delay
    amplitude: FArray  # per beat: integrator peak (QRS) or rise from the preceding trough (pulse, band units)
    band: FArray  # the causally band-passed signal the detector worked on


def hold_last(signal: npt.ArrayLike) -> FArray:
    """Non-finite samples replaced by the last finite one (0 before the first): causal, unlike interpolation."""
    x = np.asarray(signal, dtype=np.float64)
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    index = np.where(bad, 0, np.arange(x.size))
    np.maximum.accumulate(index, out=index)
    held = x[index]
    result: FArray = np.where(np.isfinite(held), held, 0.0)
    return result


def _causal_band(x: FArray, fs: float, band_hz: tuple[float, float]) -> tuple[FArray, float]:
    """Band-passed ``x`` (filter started in steady state on the first sample) and its delay in samples."""
    sos = butter(2, list(band_hz), btype="bandpass", fs=fs, output="sos")
    zi = sosfilt_zi(sos) * (x[0] if x.size else 0.0)
    out, _ = sosfilt(sos, x, zi=zi)
    b, a = sos2tf(sos)
    centre = math.sqrt(band_hz[0] * band_hz[1])
    _, delay = group_delay((b, a), w=[centre], fs=fs)
    return np.asarray(out, np.float64), float(delay[0])


def _window_maxima(x: FArray, half: int, *, positive: bool) -> IArray:
    """Samples that are the maximum of ``x`` over ``[i - half, i + half]`` (first of a plateau; > 0 if ``positive``).

    Only samples whose whole window lies inside ``x`` are returned, so a result never changes when
    ``x`` grows: a maximum is known ``half`` samples after it.
    """
    if x.size <= half:
        return np.zeros(0, np.int64)
    peak = maximum_filter1d(x, size=2 * half + 1, mode="nearest")
    rising = np.concatenate(([True], x[1:] > x[:-1]))
    found = np.flatnonzero((x == peak) & rising & ((x > 0) if positive else True))
    result: IArray = found[found + half < x.size].astype(np.int64)
    return result


def _trailing(values: FArray, size: int, *, maximum: bool) -> FArray:
    """Running max (or min) over the last ``size`` samples including the current one (causal)."""
    origin = (size - 1) // 2  # shift the window to [i - size + 1, i]
    func = maximum_filter1d if maximum else minimum_filter1d
    out: FArray = func(values, size=size, mode="nearest", origin=origin)
    return out


def detect_qrs_causal(ecg: npt.ArrayLike, fs: float) -> Detections:
    """R peaks of one ECG lead as a strap's firmware finds them (see the module doc for the delay bound)."""
    x = hold_last(ecg)
    n = x.size
    empty = np.zeros(0, np.int64)
    if n == 0:
        return Detections(empty, empty, np.zeros(0), np.zeros(0))
    band, band_delay = _causal_band(x, fs, QRS_BAND_HZ)
    deriv = np.concatenate(([0.0], np.diff(band))) * fs  # mV/s
    width = max(1, round(QRS_INTEGRATION_S * fs))
    mwi = np.asarray(lfilter(np.full(width, 1.0 / width), [1.0], deriv * deriv), np.float64)
    learn = round(QRS_LEARN_S * fs)
    half = max(1, round(QRS_PEAK_HALF_WINDOW_S * fs))
    if n <= learn:
        return Detections(empty, empty, np.zeros(0), band)
    candidates = _window_maxima(mwi, half, positive=True)
    # the R peak: the largest band-passed deflection in the integrator's window (past samples only)
    reach = width + round(0.1 * fs)
    magnitude = np.abs(band)
    slope_abs = np.abs(deriv)
    r_peaks = np.empty(candidates.size, np.int64)
    slopes = np.empty(candidates.size)
    for k, c in enumerate(candidates.tolist()):
        lo = max(0, c - reach)
        r_peaks[k] = lo + int(np.argmax(magnitude[lo : c + 1]))
        slopes[k] = float(np.max(slope_abs[max(0, c - width) : c + 1]))
    r_peaks = np.maximum(r_peaks - round(band_delay), 0)
    heights = mwi[candidates]
    decided_at = np.maximum(candidates + half, learn - 1)

    floor = QRS_MIN_RMS_SLOPE_MV_S**2
    relearn_after = round(QRS_RELEARN_S * fs)

    def learned(end: int) -> tuple[float, float]:
        """Signal and noise levels from the 2 s of integrator output up to ``end`` (Pan-Tompkins learning)."""
        window = mwi[max(0, end - learn + 1) : end + 1]
        return float(np.max(window)) / 3.0, float(np.mean(window)) / 2.0

    spki, npki = learned(learn - 1)
    learned_at = learn - 1
    refractory = round(QRS_REFRACTORY_S * fs)
    t_wave = round(QRS_T_WAVE_S * fs)
    max_search = round((QRS_MAX_DELAY_S - 0.1) * fs)
    beats: list[int] = []
    decided: list[int] = []
    amplitudes: list[float] = []
    rr: deque[int] = deque(maxlen=QRS_RR_HISTORY)
    last_r = -1
    last_slope = 0.0
    searched = False
    noise: list[tuple[int, float, float, int]] = []  # since the last beat: (R peak, height, slope, decided)

    def accept(r: int, height: float, slope: float, when: int, weight: float) -> None:
        nonlocal last_r, last_slope, spki, searched
        if last_r >= 0:
            rr.append(r - last_r)
        beats.append(r)
        decided.append(when)
        amplitudes.append(height)
        last_r, last_slope, searched = r, slope, False
        spki = weight * height + (1.0 - weight) * spki
        noise[:] = [item for item in noise if item[0] > r]

    def is_t_wave(r: int, slope: float) -> bool:
        """Soon after a beat and with under half its slope: the beat's T wave."""
        return last_r >= 0 and r - last_r < t_wave and slope < 0.5 * last_slope

    def search_back(until: int) -> None:
        """Search-back triggers due before sample ``until``; uses only candidates decided by the trigger."""
        nonlocal searched
        while last_r >= 0 and rr and not searched:
            trigger = last_r + min(round(QRS_SEARCH_BACK_RR * float(np.mean(rr))), max_search)
            if trigger >= until:
                return
            threshold2 = max(0.5 * (npki + QRS_THRESHOLD_FRACTION * (spki - npki)), floor)
            eligible = [
                item
                for item in noise
                if item[0] - last_r > refractory
                and item[1] > threshold2
                and item[3] <= trigger
                and not is_t_wave(item[0], item[2])
            ]
            if not eligible:
                searched = True
                return
            best = max(eligible, key=lambda item: item[1])
            accept(best[0], best[1], best[2], trigger, 0.25)

    for r, height, slope, when in zip(
        r_peaks.tolist(), heights.tolist(), slopes.tolist(), decided_at.tolist(), strict=True
    ):
        search_back(when)
        if when - max(last_r, learned_at) > relearn_after:
            spki, npki = learned(when)
            learned_at = when
        if last_r >= 0 and r - last_r <= refractory:
            continue
        threshold1 = max(npki + QRS_THRESHOLD_FRACTION * (spki - npki), floor)
        if height > threshold1 and not is_t_wave(r, slope):
            accept(r, height, slope, when, 0.125)
        else:
            npki = 0.125 * height + 0.875 * npki
            noise.append((r, height, slope, when))
    search_back(n)
    return Detections(np.asarray(beats, np.int64), np.asarray(decided, np.int64), np.asarray(amplitudes), band)


def detect_pulses_causal(pleth: npt.ArrayLike, fs: float) -> Detections:
    """Systolic peaks of a plethysmogram as an oximeter's firmware finds them (decided 200 ms after each)."""
    x = hold_last(pleth)
    empty = np.zeros(0, np.int64)
    if x.size == 0:
        return Detections(empty, empty, np.zeros(0), np.zeros(0))
    band, _ = _causal_band(x, fs, PULSE_BAND_HZ)
    half = max(1, round(PULSE_PEAK_HALF_WINDOW_S * fs))
    spread_n = max(2, round(PULSE_SPREAD_S * fs))
    spread = _trailing(band, spread_n, maximum=True) - _trailing(band, spread_n, maximum=False)
    step = max(1, round(fs))
    lags = [
        np.concatenate((np.full(min(k * step, spread.size), spread[0]), spread))[: spread.size]
        for k in range(PULSE_SPREAD_HISTORY_S)
    ]
    scale = np.median(np.vstack(lags), axis=0)
    trough = _trailing(band, max(2, round(PULSE_TROUGH_S * fs)), maximum=False)
    peaks = _window_maxima(band, half, positive=False)
    rise = band[peaks] - trough[peaks]
    keep = rise > np.maximum(PULSE_MIN_RISE * scale[peaks], FLAT_LEVEL)
    peaks, rise = peaks[keep], rise[keep]
    recent = round(PULSE_RECENT_S * fs)
    accepted: list[int] = []
    accepted_rise: list[float] = []
    for peak, height in zip(peaks.tolist(), rise.tolist(), strict=True):
        lately = [h for p, h in zip(accepted[-8:], accepted_rise[-8:], strict=True) if peak - p <= recent]
        if len(accepted) >= 2 and lately:
            early = peak - accepted[-1] < PULSE_DICROTIC_OF_INTERVAL * (accepted[-1] - accepted[-2])
            if early and height < PULSE_MIN_RISE_OF_RECENT * float(np.median(lately)):
                continue  # the dicrotic wave: early in the beat and much smaller than the pulses before it
        accepted.append(peak)
        accepted_rise.append(height)
    beats: IArray = np.asarray(accepted, np.int64)
    rise = np.asarray(accepted_rise, np.float64)
    return Detections(beats, beats + half, rise, band)


def detect_qrs(ecg: npt.ArrayLike, fs: float) -> IArray:
    """R-peak sample indices of one ECG lead (the causal strap detector)."""
    return detect_qrs_causal(ecg, fs).beats


def detect_pulses(pleth: npt.ArrayLike, fs: float) -> IArray:
    """Systolic peak sample indices of a plethysmogram (the causal oximeter detector)."""
    return detect_pulses_causal(pleth, fs).beats


def firmware_heart_rate(beat_times: npt.ArrayLike, seconds: int, window: float = HR_WINDOW_S) -> FArray:
    """Mean rate (bpm) over the RR intervals ending in the last ``window`` s, at the end of each second; NaN if none.

    An accuracy measure (applied alike to detected and reference beats), not what the strap reports.
    """
    beats = np.sort(np.asarray(beat_times, dtype=np.float64))
    if beats.size < 2:
        return np.full(seconds, np.nan)
    ends = beats[1:]
    rr = np.diff(beats)
    cum = np.concatenate(([0.0], np.cumsum(rr)))
    t = np.arange(1, seconds + 1, dtype=np.float64)
    hi = np.searchsorted(ends, t, side="right")
    lo = np.searchsorted(ends, t - window, side="right")
    count = hi - lo
    total = cum[hi] - cum[lo]
    with np.errstate(divide="ignore", invalid="ignore"):
        hr: FArray = np.where(count > 0, 60.0 * count / np.where(total > 0, total, 1.0), np.nan)
    return hr


def match_beats(detected: npt.ArrayLike, reference: npt.ArrayLike, tolerance: float) -> tuple[int, int, int]:
    """(true positives, false positives, false negatives) matching beat times one-to-one within ``tolerance``."""
    det = np.sort(np.asarray(detected, dtype=np.float64))
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    used = np.zeros(det.size, np.bool_)
    tp = 0
    for r in ref:
        j = int(np.searchsorted(det, r))
        best = -1
        best_d = tolerance
        for k in (j - 1, j):
            if 0 <= k < det.size and not used[k] and abs(det[k] - r) <= best_d:
                best, best_d = k, abs(det[k] - r)
        if best >= 0:
            used[best] = True
            tp += 1
    return tp, int(det.size - tp), int(ref.size - tp)


@dataclass(frozen=True, slots=True)
class BeatComparison:
    """Accuracy of detected beats against reference beats over one record."""

    record: str
    detected: int
    reference: int
    sensitivity: float
    ppv: float
    hr_mae_bpm: float  # mean |firmware HR - reference firmware HR| over seconds where both exist
    seconds: int


def compare(
    record: str, detected_s: npt.ArrayLike, reference_s: npt.ArrayLike, seconds: int, tolerance: float = 0.15
) -> BeatComparison:
    """Beat sensitivity/PPV within ``tolerance`` s and the 1 Hz firmware-HR mean absolute error."""
    det = np.asarray(detected_s, dtype=np.float64)
    ref = np.asarray(reference_s, dtype=np.float64)
    tp, fp, fn = match_beats(det, ref, tolerance)
    hr_det = firmware_heart_rate(det, seconds)
    hr_ref = firmware_heart_rate(ref, seconds)
    both = np.isfinite(hr_det) & np.isfinite(hr_ref)
    both[: int(HR_WINDOW_S)] = False  # the first window is still filling
    mae = float(np.mean(np.abs(hr_det[both] - hr_ref[both]))) if both.any() else float("nan")
    return BeatComparison(
        record,
        int(det.size),
        int(ref.size),
        tp / (tp + fn) if tp + fn else float("nan"),
        tp / (tp + fp) if tp + fp else float("nan"),
        mae,
        int(both.sum()),
    )
