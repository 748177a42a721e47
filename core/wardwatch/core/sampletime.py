"""Whether a sample's time stamp can be real: the one rule ingest and alerting share.

A wearable or gateway with a wrong clock (an RTC-less Raspberry Pi before NTP, a reset device at
``t = 0``, a forged message stamped a century ahead) must not reach storage or the alarm engine:
the engine drops samples not newer than the newest it has seen, so one sample stamped in the future
would hide every real one until the clock caught up. Ingest dead-letters such samples; alerting
ignores them and raises a "device clock wrong" technical alarm.
"""

from __future__ import annotations

from typing import Final

EARLIEST_SAMPLE_MS: Final = 1_577_836_800_000
"""2020-01-01T00:00:00Z: no wardwatch sample is older than this (anything before is a clock that was never set)."""

FUTURE_MARGIN_MS: Final = 300_000
"""Default: a sample stamped more than 5 minutes ahead of the receiving server's clock is impossible."""


def implausible_time(
    t: int, now_ms: int, *, future_margin_ms: int = FUTURE_MARGIN_MS, earliest_ms: int = EARLIEST_SAMPLE_MS
) -> str | None:
    """Why ``t`` (ms since the epoch) cannot be a sample's real time at ``now_ms``, or ``None`` if it can."""
    if t < earliest_ms:
        return f"time stamp {t} is before 2020-01-01 (device clock not set)"
    ahead = t - now_ms
    if ahead > future_margin_ms:
        return f"time stamp {t} is {ahead / 1000:.0f} s ahead of the server clock (limit {future_margin_ms / 1000:g} s)"
    return None
