"""What the device firmware does with its waveform: QRS detection (strap) and pulse detection (oximeter).

* :func:`detect_qrs` — Pan-Tompkins style: 5-15 Hz band-pass, derivative, squaring, 150 ms moving
  integration, peaks above an adaptive threshold with a 250 ms refractory period, R peak refined
  on the band-passed signal.
* :func:`detect_pulses` — 0.5-8 Hz band-pass of the plethysmogram, systolic peaks with an adaptive
  prominence and a 300 ms refractory period; also a relative perfusion index (AC/DC).
* :func:`firmware_heart_rate` — the 1 Hz rate a device reports from beat times (mean of the RR
  intervals of the last 4 s), and :func:`match_beats` / :func:`compare` for accuracy figures.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter1d, minimum_filter1d
from scipy.signal import butter, find_peaks, sosfiltfilt

__all__ = [
    "BeatComparison",
    "compare",
    "detect_pulses",
    "detect_qrs",
    "firmware_heart_rate",
    "match_beats",
    "perfusion_index",
]

FArray = npt.NDArray[np.float64]
IArray = npt.NDArray[np.int64]

HR_WINDOW_S: Final = 4.0


def _clean(x: npt.ArrayLike) -> FArray:
    signal = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(signal)
    if bad.all():
        return np.zeros_like(signal)
    if bad.any():
        idx = np.arange(signal.size)
        signal = signal.copy()
        signal[bad] = np.interp(idx[bad], idx[~bad], signal[~bad])
    return signal


def detect_qrs(ecg: npt.ArrayLike, fs: float) -> IArray:
    """R-peak sample indices of one ECG lead."""
    x = _clean(ecg)
    if x.size < int(fs):
        return np.zeros(0, np.int64)
    sos = butter(2, [5.0, 15.0], btype="bandpass", fs=fs, output="sos")
    band = sosfiltfilt(sos, x)
    deriv = np.gradient(band)
    energy = deriv * deriv
    width = max(1, round(0.15 * fs))
    mwi = np.convolve(energy, np.ones(width) / width, mode="same")
    # adaptive threshold: a fraction of the local maximum over 3 s, floored by a global level
    envelope = maximum_filter1d(mwi, size=max(3, round(3.0 * fs)))
    floor = 0.05 * float(np.percentile(envelope, 50))
    threshold = np.maximum(0.2 * envelope, floor)
    peaks, _ = find_peaks(mwi, height=threshold, distance=max(1, round(0.22 * fs)))
    # refine to the largest band-passed deflection within +-100 ms
    half = max(1, round(0.1 * fs))
    magnitude = np.abs(band)
    refined = np.empty(peaks.size, np.int64)
    for k, p in enumerate(peaks):
        lo, hi = max(0, p - half), min(x.size, p + half + 1)
        refined[k] = lo + int(np.argmax(magnitude[lo:hi]))
    refined = np.unique(refined)
    # enforce the refractory period after refinement
    keep = np.concatenate(([True], np.diff(refined) > round(0.2 * fs))) if refined.size else refined.astype(bool)
    return refined[keep]


def detect_pulses(pleth: npt.ArrayLike, fs: float) -> IArray:
    """Systolic peak sample indices of a plethysmogram."""
    x = _clean(pleth)
    if x.size < int(2 * fs):
        return np.zeros(0, np.int64)
    sos = butter(2, [0.5, 8.0], btype="bandpass", fs=fs, output="sos")
    band = sosfiltfilt(sos, x)
    size = max(3, round(3.0 * fs))
    spread = maximum_filter1d(band, size=size) - minimum_filter1d(band, size=size)
    peaks, _ = find_peaks(band, prominence=0.25 * np.median(spread), distance=max(1, round(0.25 * fs)))
    result: IArray = peaks.astype(np.int64)
    return result


def perfusion_index(pleth: npt.ArrayLike, fs: float, peaks: IArray) -> float:
    """Relative perfusion index, % (pulsatile amplitude over mean level); NaN without pulses."""
    x = _clean(pleth)
    if peaks.size < 2:
        return float("nan")
    sos = butter(2, [0.5, 8.0], btype="bandpass", fs=fs, output="sos")
    band = sosfiltfilt(sos, x)
    troughs = [int(np.min(band[a:b])) if b > a else 0 for a, b in itertools.pairwise(peaks)]
    ac = float(np.median(band[peaks[1:]] - np.asarray(troughs)))
    dc = float(np.mean(np.abs(x))) or 1.0
    return 100.0 * ac / dc


def firmware_heart_rate(beat_times: npt.ArrayLike, seconds: int, window: float = HR_WINDOW_S) -> FArray:
    """The rate (bpm) a device reports at the end of each second: mean RR of the last ``window`` s; NaN if none."""
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
