"""The parts of NEWS2 (Royal College of Physicians, 2017) that a HR + SpO2 wearable can score.

The score is always *partial*: respiratory rate, temperature, blood pressure and consciousness are
missing, so a partial aggregate is a lower bound of the real one and must be shown as partial.
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

    @property
    def any_three(self) -> bool:
        """A single parameter scored 3 (the RCP 'red score')."""
        return self.spo2 == 3 or self.pulse == 3

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


def partial_news2(spo2: float | None, pulse: float | None, scale: int = 1, on_o2: bool = False) -> PartialNews2:
    """Score the available parameters."""
    sp = None if spo2 is None else spo2_points(spo2, scale, on_o2)
    pp = None if pulse is None else pulse_points(pulse)
    o2 = o2_points(on_o2)
    return PartialNews2(score=(sp or 0) + o2 + (pp or 0), spo2=sp, o2=o2, pulse=pp)
