"""The parts of NEWS2 (Royal College of Physicians, 2017) that wearables can score.

HR and SpO2 come from the strap and oximeter; systolic BP and temperature from a cuff and a
thermometer when a reading is recent. The score is always *partial*: respiratory rate and
consciousness are never measured, so a partial aggregate is a lower bound of the real one and must
be shown as partial (:attr:`PartialNews2.label` names what was scored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

PARTIAL_TEXT: Final = "partial NEWS2 (HR, SpO2 only)"


def spo2_points(spo2: float, scale: int = 1, on_o2: bool = False) -> int:
    """NEWS2 points of an SpO2 reading on scale 1 or 2 (scale 2 scores high SpO2 on oxygen)."""
    if scale == 1:
        if spo2 <= 91:
            return 3
        if spo2 <= 93:
            return 2
        if spo2 <= 95:
            return 1
        return 0
    if spo2 <= 83:
        return 3
    if spo2 <= 85:
        return 2
    if spo2 <= 87:
        return 1
    if spo2 <= 92 or not on_o2:
        return 0
    if spo2 <= 94:
        return 1
    if spo2 <= 96:
        return 2
    return 3


def pulse_points(pulse: float) -> int:
    """NEWS2 points of a pulse rate (/min)."""
    if pulse <= 40:
        return 3
    if pulse <= 50:
        return 1
    if pulse <= 90:
        return 0
    if pulse <= 110:
        return 1
    if pulse <= 130:
        return 2
    return 3


def systolic_points(systolic: float) -> int:
    """NEWS2 points of a systolic blood pressure (mmHg)."""
    if systolic <= 90:
        return 3
    if systolic <= 100:
        return 2
    if systolic <= 110:
        return 1
    if systolic <= 219:
        return 0
    return 3


def temperature_points(celsius: float) -> int:
    """NEWS2 points of a temperature (°C)."""
    if celsius <= 35.0:
        return 3
    if celsius <= 36.0:
        return 1
    if celsius <= 38.0:
        return 0
    if celsius <= 39.0:
        return 1
    return 2


def o2_points(on_o2: bool) -> int:
    """NEWS2 points for supplemental oxygen (2) versus air (0)."""
    return 2 if on_o2 else 0


@dataclass(frozen=True, slots=True)
class PartialNews2:
    """A partial NEWS2 aggregate and its parts (``None``: parameter not available)."""

    score: int
    spo2: int | None
    o2: int
    pulse: int | None
    systolic: int | None = None
    temperature: int | None = None

    @property
    def any_three(self) -> bool:
        """A single parameter scored 3 (the RCP 'red score')."""
        return 3 in (self.spo2, self.pulse, self.systolic, self.temperature)

    @property
    def label(self) -> str:
        """``partial NEWS2 (HR, SpO2, BP, temperature)``: what was scored; respiration and consciousness never are."""
        scored = ["HR", "SpO2"]
        if self.systolic is not None:
            scored.append("BP")
        if self.temperature is not None:
            scored.append("temperature")
        return f"partial NEWS2 ({', '.join(scored)}{' only' if len(scored) == 2 else ''})"

    @property
    def tier(self) -> str:
        """RCP clinical response tier."""
        if self.score >= 7:
            return "high: emergency response"
        if self.score >= 5:
            return "medium: urgent response within 1 h"
        if self.any_three:
            return "low-medium: urgent ward-based response"
        if self.score >= 1:
            return "low: ward-based response"
        return "routine monitoring"


def partial_news2(
    spo2: float | None,
    pulse: float | None,
    scale: int = 1,
    on_o2: bool = False,
    *,
    systolic: float | None = None,
    temperature: float | None = None,
) -> PartialNews2:
    """Score the available parameters."""
    sp = None if spo2 is None else spo2_points(spo2, scale, on_o2)
    pp = None if pulse is None else pulse_points(pulse)
    bp = None if systolic is None else systolic_points(systolic)
    tp = None if temperature is None else temperature_points(temperature)
    o2 = o2_points(on_o2)
    score = (sp or 0) + o2 + (pp or 0) + (bp or 0) + (tp or 0)
    return PartialNews2(score=score, spo2=sp, o2=o2, pulse=pp, systolic=bp, temperature=tp)
