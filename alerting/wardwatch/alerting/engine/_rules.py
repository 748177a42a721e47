"""Per-sample rule state machines: threshold with condition delay, SatSeconds and hysteresis; minute series."""

from __future__ import annotations

import math
from collections import deque


class Threshold:
    """``value < limit`` (``below``) or ``> limit`` held for a delay, cleared by a hysteresis band.

    Only valid samples are fed, and an idle rule (not raised, nothing pending) only needs the samples
    beyond its limit. A gap longer than ``max_gap`` between valid samples restarts the delay, the
    sample count and the SatSeconds sum (flagged stretches are no evidence either way); the sum
    starts at the first sample beyond the limit. Up to ``grace`` consecutive samples back within
    the limit do not restart a pending condition (values hovering at a limit would otherwise never
    satisfy the delay); they add nothing to the SatSeconds sum and cannot raise.
    Raised when the condition has lasted ``delay`` over at least ``min_n`` samples, or when the
    SatSeconds-style sum of ``|limit - value| x seconds`` reaches ``budget`` (0: off). Cleared when
    values stay in the reset band (``>= reset`` / ``<= reset``) for ``reset_ms``.
    """

    __slots__ = (
        "active",
        "area",
        "below",
        "budget",
        "by_area",
        "clear_since",
        "delay",
        "grace",
        "last_t",
        "limit",
        "max_gap",
        "min_n",
        "n",
        "ok_run",
        "reset",
        "reset_ms",
        "since",
    )

    def __init__(self, below: bool) -> None:
        self.below = below
        self.limit = 0.0
        self.delay = 0
        self.min_n = 1
        self.reset = 0.0
        self.reset_ms = 0
        self.max_gap = 5000
        self.budget = 0.0
        self.grace = 2
        self.ok_run = 0
        self.active = False
        self.since = -1
        self.n = 0
        self.area = 0.0
        self.by_area = False
        self.clear_since = -1
        self.last_t = -(10**15)

    def configure(
        self,
        limit: float,
        delay_s: float,
        min_n: int,
        margin: float,
        reset_s: float,
        max_gap_s: float,
        budget: float,
        reset_from: float | None = None,
        grace: int = 2,
    ) -> None:
        """Set the parameters (state is kept, so overrides apply to a running condition).

        The reset band starts ``margin`` beyond ``reset_from`` (default: the limit itself); a severe
        rule passes its milder sibling's limit, so one episode is one alarm until it fully resolves.
        """
        self.limit = limit
        self.delay = round(delay_s * 1000)
        self.min_n = min_n
        base = limit if reset_from is None else reset_from
        self.reset = base + margin if self.below else base - margin
        self.reset_ms = round(reset_s * 1000)
        self.max_gap = round(max_gap_s * 1000)
        self.budget = budget
        self.grace = grace

    def update(self, t: int, v: float) -> int:
        """Feed one valid sample: ``1`` when the condition is raised, ``-1`` when cleared, else ``0``."""
        dt = t - self.last_t
        self.last_t = t
        gap = dt > self.max_gap
        if not self.active:
            excess = self.limit - v if self.below else v - self.limit
            if excess <= 0:
                if self.since >= 0 and not gap and self.ok_run < self.grace:
                    self.ok_run += 1  # noise around the limit: a pending condition survives a sample or two
                else:
                    self.since = -1
                    self.area = 0.0
                return 0
            if self.since < 0 or gap:
                self.since = t
                self.n = 1
                self.area = 0.0
            else:
                self.n += 1
                self.area += excess * dt * 0.001
            self.ok_run = 0
            if self.n >= self.min_n and t - self.since >= self.delay:
                self.active = True
                self.by_area = False
                self.clear_since = -1
                return 1
            if self.budget > 0.0 and self.area >= self.budget:
                self.active = True
                self.by_area = True
                self.clear_since = -1
                return 1
            return 0
        if (v >= self.reset) if self.below else (v <= self.reset):
            if self.clear_since < 0 or gap:
                self.clear_since = t
            if t - self.clear_since >= self.reset_ms:
                self.active = False
                self.since = -1
                self.area = 0.0
                self.clear_since = -1
                return -1
        else:
            self.clear_since = -1
        return 0


MIN_VALUES_PER_MINUTE = 6


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n >> 1] if n & 1 else 0.5 * (s[(n >> 1) - 1] + s[n >> 1])


class MinuteSeries:
    """Per-minute medians of accepted samples, a recent window and an EWMA baseline of older minutes."""

    __slots__ = (
        "alpha",
        "baseline",
        "baseline_n",
        "frozen",
        "last_median",
        "last_minute",
        "minute",
        "recent",
        "values",
    )

    def __init__(self) -> None:
        self.minute = -1
        self.values: list[float] = []
        self.last_minute = -(10**9)
        self.last_median = math.nan
        self.recent: deque[tuple[int, float]] = deque()
        self.baseline = math.nan
        self.baseline_n = 0
        self.alpha = 1.0 - math.exp(-1.0 / 240.0)
        self.frozen = False

    def close(self, window: int) -> None:
        """Close the current minute (median if enough values) and start collecting the next one."""
        values = self.values
        if len(values) >= MIN_VALUES_PER_MINUTE:
            median = _median(values)
            self.last_minute = self.minute
            self.last_median = median
            self.recent.append((self.minute, median))
        self.values = []
        horizon = self.minute - window
        recent = self.recent
        while recent and recent[0][0] <= horizon:
            _, old = recent.popleft()
            if self.frozen:
                continue
            if self.baseline_n == 0:
                self.baseline = old
            else:
                self.baseline += self.alpha * (old - self.baseline)
            self.baseline_n += 1

    def current(self, minute: int) -> float | None:
        """The latest minute median if it is at most 2 minutes old."""
        return self.last_median if self.last_minute >= minute - 2 else None

    def recent_median(self, minute: int, window: int) -> tuple[float, int]:
        """Median of the minute medians within ``window`` minutes before ``minute``, and how many there were."""
        values = [v for m, v in self.recent if m > minute - window - 1]
        return (_median(values) if values else math.nan), len(values)
