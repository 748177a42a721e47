"""The interface between the pure alarm engine and the alarm manager (lifecycle, paging, audit).

The engine turns samples into :class:`ConditionChange` events: a rule's alarm condition for one
patient became true (``active=True``) or cleared (``active=False``, after hysteresis). The manager
turns those into alarms with a lifecycle, pages and escalation. Both are pure (time passed in).
"""

from __future__ import annotations

from dataclasses import dataclass

from wardwatch.core.schema import AlarmCategory, News2, Priority


@dataclass(frozen=True, slots=True)
class ConditionChange:
    """A rule's condition for a patient started or ended at time ``t`` (ms since epoch, UTC)."""

    patient: str
    ward: str
    rule: str  # e.g. "spo2_low", "spo2_low_severe", "hr_high", "sensor_off", "gateway_offline"
    category: AlarmCategory
    priority: Priority
    active: bool
    t: int
    value: float | None = None
    text: str = ""  # clinical text without PHI: "SpO2 84 % below 90 % for 15 s"
    news2: News2 | None = None  # the partial NEWS2 behind a news2_* condition

    @property
    def dedup_key(self) -> str:
        """One alarm per patient and rule at a time."""
        return f"{self.ward}/{self.patient}/{self.rule}"
