"""NEWS2 (Royal College of Physicians, 2017) from wearables and a nurse's manual observations.

HR and SpO2 come from the strap and oximeter; systolic BP and temperature from a cuff and a
thermometer; respiratory rate, consciousness (ACVPU) and supplemental oxygen only from a nurse
(any parameter may also be entered by a nurse). :func:`score_news2` takes, per parameter, the most
recent observation within its freshness bound, whichever source it came from: the score is *full*
when all seven parameters are recent and *partial* otherwise, with the missing ones named. A partial
aggregate is a lower bound of the real one and must be shown as partial.

:func:`partial_news2` is the older entry point (device parameters only), kept for its callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

from wardwatch.core.schema import News2

PARTIAL_TEXT: Final = "partial NEWS2"  # every partial score's label starts with it


Bands = tuple[tuple[float, int], ...]
"""A scoring table: ``(upper bound, points)`` pairs in rising order; a value scores the points of the first
bound it does not exceed."""

_SPO2_SCALE_1: Final[Bands] = ((91, 3), (93, 2), (95, 1))
_SPO2_SCALE_2_AIR: Final[Bands] = ((83, 3), (85, 2), (87, 1))
_SPO2_SCALE_2_O2: Final[Bands] = (*_SPO2_SCALE_2_AIR, (92, 0), (94, 1), (96, 2))
_PULSE: Final[Bands] = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2))
_SYSTOLIC: Final[Bands] = ((90, 3), (100, 2), (110, 1), (219, 0))
_TEMPERATURE: Final[Bands] = ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1))
_RESPIRATION: Final[Bands] = ((8, 3), (11, 1), (20, 0), (24, 2))


def band_points(value: float, bands: Bands, above: int) -> int:
    """The points of the first band whose upper bound ``value`` does not exceed, else ``above``
    (also for NaN, which exceeds no bound's test)."""
    for upper, points in bands:
        if value <= upper:
            return points
    return above


def spo2_points(spo2: float, scale: int = 1, on_o2: bool = False) -> int:
    """NEWS2 points of an SpO2 reading on scale 1 or 2 (scale 2 scores high SpO2 on oxygen)."""
    if scale == 1:
        return band_points(spo2, _SPO2_SCALE_1, 0)
    if on_o2:
        return band_points(spo2, _SPO2_SCALE_2_O2, 3)
    return band_points(spo2, _SPO2_SCALE_2_AIR, 0)


def pulse_points(pulse: float) -> int:
    """NEWS2 points of a pulse rate (/min)."""
    return band_points(pulse, _PULSE, 3)


def systolic_points(systolic: float) -> int:
    """NEWS2 points of a systolic blood pressure (mmHg)."""
    return band_points(systolic, _SYSTOLIC, 3)


def temperature_points(celsius: float) -> int:
    """NEWS2 points of a temperature (°C)."""
    return band_points(celsius, _TEMPERATURE, 2)


def respiration_points(rate: float) -> int:
    """NEWS2 points of a respiratory rate (/min)."""
    return band_points(rate, _RESPIRATION, 3)


def response_tier(score: int, any_three: bool) -> str:
    """The RCP clinical response tier of an aggregate ``score`` (``any_three``: a single parameter scored 3)."""
    if score >= 7:
        return "high: emergency response"
    if score >= 5:
        return "medium: urgent response within 1 h"
    if any_three:
        return "low-medium: urgent ward-based response"
    if score >= 1:
        return "low: ward-based response"
    return "routine monitoring"


ACVPU: Final = ("A", "C", "V", "P", "U")  # alert, new confusion, voice, pain, unresponsive


def consciousness_points(acvpu: str) -> int:
    """NEWS2 points of an ACVPU level: alert 0, anything else (new confusion, V, P, U) 3."""
    if acvpu not in ACVPU:
        raise ValueError(f"consciousness must be one of {', '.join(ACVPU)} (ACVPU), got {acvpu!r}")
    return 0 if acvpu == "A" else 3


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
        return f"{PARTIAL_TEXT} ({', '.join(scored)}{' only' if len(scored) == 2 else ''})"

    @property
    def tier(self) -> str:
        """RCP clinical response tier."""
        return response_tier(self.score, self.any_three)


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


class Param(StrEnum):
    """The seven NEWS2 parameters."""

    RESPIRATION = "respiration"
    SPO2 = "spo2"
    O2 = "supplemental_o2"
    SYSTOLIC = "systolic"
    PULSE = "pulse"
    CONSCIOUSNESS = "consciousness"
    TEMPERATURE = "temperature"


PARAMS: Final = tuple(Param)
_SHORT: Final = {
    Param.RESPIRATION: "RR",
    Param.SPO2: "SpO2",
    Param.O2: "O2",
    Param.SYSTOLIC: "BP",
    Param.PULSE: "HR",
    Param.CONSCIOUSNESS: "ACVPU",
    Param.TEMPERATURE: "temperature",
}
Source = Literal["device", "nurse"]


@dataclass(frozen=True, slots=True)
class Observed:
    """One observation of a parameter: its value (ACVPU letter, bool for O2, else a number), when, from whom."""

    value: float | str | bool
    t: int  # ms since epoch, when it was taken
    source: Source


def most_recent(*candidates: Observed | None) -> Observed | None:
    """The most recent of the candidates (device or nurse); on a tie the nurse's, who looked at the patient."""
    best: Observed | None = None
    for c in candidates:
        if c is None:
            continue
        if best is None or c.t > best.t or (c.t == best.t and c.source == "nurse"):
            best = c
    return best


@dataclass(frozen=True, slots=True)
class News2Score:
    """A NEWS2 aggregate, its sub-scores (``None``: not recent) and where each parameter came from.

    ``full`` only when all seven parameters are recent; otherwise ``missing`` names the others, the
    aggregate is a lower bound and the label says *partial*.
    """

    score: int
    points: Mapping[Param, int]
    used: Mapping[Param, Observed]
    missing: tuple[Param, ...]
    spo2_scale: Literal[1, 2]
    t: int

    @property
    def o2(self) -> int:
        """The air-or-oxygen sub-score: observed, else the patient's profile (which still counts as missing)."""
        return self.points.get(Param.O2, self.score - sum(self.points.values()))

    @property
    def full(self) -> bool:
        """All seven parameters are recent."""
        return not self.missing

    @property
    def any_three(self) -> bool:
        """A single parameter scored 3 (the RCP 'red score')."""
        return 3 in self.points.values()

    @property
    def label(self) -> str:
        """``NEWS2`` when full, else ``partial NEWS2 (HR, SpO2; missing RR, ACVPU, …)``."""
        if self.full:
            return "NEWS2"
        scored = ", ".join(_SHORT[p] for p in PARAMS if p in self.points) or "nothing"
        return f"{PARTIAL_TEXT} ({scored}; missing {', '.join(_SHORT[p] for p in self.missing)})"

    @property
    def tier(self) -> str:
        """RCP clinical response tier."""
        return response_tier(self.score, self.any_three)


@dataclass(frozen=True, slots=True)
class NurseObservation:
    """The parameters a nurse measured at time ``t`` (ms since epoch); ``None``: not taken this time."""

    t: int
    respiration: float | None = None  # /min
    spo2: float | None = None  # %
    supplemental_o2: bool | None = None
    systolic: float | None = None  # mmHg
    pulse: float | None = None  # /min
    consciousness: str | None = None  # ACVPU letter
    temperature: float | None = None  # °C

    def observed(self) -> dict[Param, Observed]:
        """The parameters taken, as nurse observations."""
        values: dict[Param, float | str | bool | None] = {
            Param.RESPIRATION: self.respiration,
            Param.SPO2: self.spo2,
            Param.O2: self.supplemental_o2,
            Param.SYSTOLIC: self.systolic,
            Param.PULSE: self.pulse,
            Param.CONSCIOUSNESS: self.consciousness,
            Param.TEMPERATURE: self.temperature,
        }
        return {p: Observed(v, self.t, "nurse") for p, v in values.items() if v is not None}


def _points(param: Param, value: float | str | bool, scale: Literal[1, 2], on_o2: bool) -> int:
    if param is Param.CONSCIOUSNESS:
        return consciousness_points(str(value))
    if param is Param.O2:
        return o2_points(bool(value))
    number = float(value)
    if param is Param.SPO2:
        return spo2_points(number, scale, on_o2)
    scorers = {
        Param.RESPIRATION: respiration_points,
        Param.SYSTOLIC: systolic_points,
        Param.PULSE: pulse_points,
        Param.TEMPERATURE: temperature_points,
    }
    return scorers[param](number)


def score_news2(
    observed: Mapping[Param, Observed | None],
    now: int,
    fresh_ms: Mapping[Param, int],
    scale: Literal[1, 2] = 1,
    default_o2: bool = False,
) -> News2Score:
    """Score every parameter observed within ``fresh_ms[param]`` of ``now`` (ms).

    Choose each parameter's observation with :func:`most_recent` first. SpO2 on scale 2 needs to
    know whether the patient is on oxygen: a recent O2 observation decides, else ``default_o2`` (the
    patient's profile), which is also what the O2 sub-score falls back to, though O2 then counts as
    missing. An observation from the future (clock skew) counts as taken ``now``.
    """
    used = {p: o for p in PARAMS if (o := observed.get(p)) is not None and now - o.t <= fresh_ms[p]}
    on_o2 = bool(used[Param.O2].value) if Param.O2 in used else default_o2
    points = {p: _points(p, o.value, scale, on_o2) for p, o in used.items()}
    missing = tuple(p for p in PARAMS if p not in used)
    score = sum(points.values()) + (0 if Param.O2 in points else o2_points(default_o2))
    return News2Score(score=score, points=points, used=used, missing=missing, spo2_scale=scale, t=now)


def to_wire(score: News2Score) -> News2:
    """The wire form of a score (``Alarm.news2``, ``News2Score``'s sub-scores)."""
    points = score.points
    return News2(
        score=score.score,
        o2=score.o2,
        spo2_scale=score.spo2_scale,
        spo2=points.get(Param.SPO2),
        pulse=points.get(Param.PULSE),
        respiration=points.get(Param.RESPIRATION),
        systolic=points.get(Param.SYSTOLIC),
        consciousness=points.get(Param.CONSCIOUSNESS),
        temperature=points.get(Param.TEMPERATURE),
        full=score.full,
        missing=[p.value for p in score.missing],
    )
