"""A naive fixed-threshold monitor, the baseline the engine is measured against.

It alarms on any single sample beyond the limits (SpO2 < spo2_low, HR/PR > hr_high or < hr_low),
with no delay, no quality gating, no artefact rejection and no hysteresis: what a bedside monitor
with delays switched off does. It has no technical alarms.
"""

from __future__ import annotations

from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import AlarmCategory, Priority, Signal, Vitals


class NaiveEngine:
    """Same ``on_vitals`` interface as :class:`~wardwatch.alerting.engine.Engine` (other inputs ignored)."""

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._rules = rules if rules is not None else RuleSet()
        self._active: dict[tuple[str, str, Signal], bool] = {}

    def on_vitals(self, msg: Vitals, ward: str) -> list[ConditionChange]:
        """One page per excursion beyond a limit, one clear when back within it."""
        out: list[ConditionChange] = []
        if msg.signal not in (Signal.SPO2, Signal.HEART_RATE, Signal.PULSE_RATE):
            return out
        th = self._rules.resolve(ward, msg.patient)
        for s in msg.samples:
            v = s.v
            if v is None:
                continue
            checks: tuple[tuple[str, bool], ...]
            if msg.signal is Signal.SPO2:
                checks = (("spo2_low", v < th.spo2_low),)
            else:
                checks = (("hr_high", v > th.hr_high), ("hr_low", v < th.hr_low))
            for rule, beyond in checks:
                key = (msg.patient, rule, msg.signal)
                if beyond != self._active.get(key, False):
                    self._active[key] = beyond
                    text = f"{msg.signal} {v:.0f} beyond limit" if beyond else f"{msg.signal} {v:.0f} within limit"
                    out.append(
                        ConditionChange(
                            msg.patient, ward, rule, AlarmCategory.PHYSIOLOGICAL, Priority.MEDIUM, beyond, s.t, v, text
                        )
                    )
        return out
