"""Late spot-check readings: taken long before they reach alerting (stored on the device while the gateway was away).

A cuff or thermometer keeps readings the patient takes while no gateway listens and delivers them, with
their own timestamps, when one is back: hours later, sometimes. Such a reading says what the patient's
blood pressure or temperature *was*; paging "systolic BP 84 mmHg" as if it were now would send a nurse
to a situation that may be over, and clearing an alarm with an old normal reading would falsely reassure.

The rule (``docs/alerting.md``, "Late spot-check readings"): a reading is *late* when alerting handles it
more than ``spot_late_s`` (default 15 min) after it was taken, by the engine's clock (the service's wall
clock, as of the last :meth:`~wardwatch.alerting.engine.Engine.tick`). A late reading

* is stored and shown like any other (ingest and the console do not depend on alerting) and counts in
  NEWS2 as an observation of *its* time (it ages out after ``news2_spot_fresh_s`` like any reading);
* never raises nor clears the spot-check alarms (``bp_low``, ``temp_high``, ``temp_low``): they mean
  "the latest reading, now";
* beyond a limit, raises a low-priority notice instead (``bp_low_late``, ``temp_high_late``,
  ``temp_low_late``) whose text gives the value and its age and asks for a new reading; a later reading
  of the same kind within that limit (late or not), or any reading on time, clears the notice.

Readings within ``spot_late_s`` (a gateway reboot, a short walk out of range) are handled as now.
Without a tick yet (a replay fed only vitals) nothing is late: the engine has no clock but the samples.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["LATE_RULES", "LateNotice", "is_late", "late_notice"]

#: The notice a late reading beyond a spot-check rule's limit raises instead of that rule.
LATE_RULES: Final = {rule: f"{rule}_late" for rule in ("bp_low", "temp_high", "temp_low")}


class LateNotice(NamedTuple):
    """What a late reading does to its notice: raise (``met``) or clear ``rule``, with ``text``."""

    rule: str
    met: bool
    text: str


def is_late(t_ms: int, now_ms: int, late_after_s: float) -> bool:
    """Whether a reading taken at ``t_ms`` is late when handled at ``now_ms`` (-1: no clock yet)."""
    return now_ms >= 0 and now_ms - t_ms > late_after_s * 1000


def _age(ms: int) -> str:
    minutes = max(0, ms) // 60_000
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def late_notice(rule: str, met: bool, reading: str, t_ms: int, now_ms: int) -> LateNotice:
    """The notice of a late reading for spot-check ``rule`` (``met``: the reading is beyond its limit).

    ``reading`` says what was measured (e.g. ``"systolic BP 84 mmHg <= 90 mmHg"``).
    """
    text = f"late reading: {reading}, taken {_age(now_ms - t_ms)} ago (kept on the device while the gateway was away)"
    if met:
        text += "; take a new reading to see how the patient is now"
    return LateNotice(LATE_RULES[rule], met, text)
