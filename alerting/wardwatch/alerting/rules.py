"""Alarm rule settings: built-in defaults < ``[defaults]`` < ``[wards.<ward>]`` < ``[patients.<patient>]``.

Every key of :class:`Thresholds` may appear in any section; a section holds only the keys it changes.
Per-patient overrides are data (``RuleSet.with_patient_override``) so the alarm manager's API can set
them and audit the change; every validation error names the key (``patients.p-1.spo2_low``).

The defaults and the evidence behind them are documented on each field and in
``deploy/alerting/rules.example.toml``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from wardwatch.core.config import load_config
from wardwatch.core.errors import ConfigError
from wardwatch.core.ids import is_identifier

Profile = Literal["virtual-ward", "arrhythmia"]


class Thresholds(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The resolved settings of every rule for one patient (times in seconds, SpO2 in %, HR in /min).

    The built-in values are the ``virtual-ward`` profile (patients at home); ``profile = "arrhythmia"``
    in any rules section starts from :data:`PROFILES` ``["arrhythmia"]`` instead (see :func:`_resolve`).
    """

    profile: Profile = "virtual-ward"
    # --- SpO2 (Welch 2011: 90 % + 15 s delay -> -70 % alarms; bypass at >=10 points below kept -68 %) ---
    spo2_low: float = 90.0
    spo2_delay_s: float = 15.0
    spo2_severe_margin: float = 10.0  # severe (high priority) below spo2_low - margin, i.e. < 80 %
    spo2_severe_samples: int = 2  # consecutive valid samples before the severe bypass fires
    satseconds_budget: float = 100.0  # Σ (limit - SpO2)·s that raises spo2_low before the delay; 0 = off
    spo2_reset_margin: float = 2.0  # hysteresis: clears at >= limit + margin ...
    spo2_reset_s: float = 10.0  # ... held this long
    # --- pulse (ECG HR from the chest strap while it has contact, else the oximeter's pulse rate) ---
    # Each HR rule has a time definition (the 1 Hz rate beyond the limit for ``*_delay_s``) and an
    # optional beat definition (``*_beats`` > 0: the rate over that many consecutive beats, from the
    # strap's RR intervals, beyond the limit). Where RR intervals flow the beat definition decides;
    # the time definition covers an oximeter-only patient or a strap without RR intervals.
    hr_high: float = 130.0
    hr_high_delay_s: float = 30.0
    hr_high_beats: int = 0  # 0: time definition only
    hr_low: float = 40.0
    hr_low_delay_s: float = 15.0
    hr_low_beats: int = 0
    hr_low_severe: float = 35.0  # extreme bradycardia, high priority (arrhythmia profile: CinC 2015, < 40 for 5 beats)
    hr_low_severe_delay_s: float = 5.0
    hr_low_severe_beats: int = 0
    hr_reset_margin: float = 5.0
    hr_reset_s: float = 10.0
    # asystole (high priority): a strap with skin contact has seen no beat for this long. 4 s is the
    # PhysioNet/CinC 2015 definition (no QRS for at least 4 s), used by both profiles: a strap that
    # slips reports lost contact (a technical alarm), so no home-specific slack is needed.
    asystole_s: float = 4.0
    # --- partial NEWS2 (RCP 2017), from 1-minute medians, re-checked before it is raised ---
    news2_enabled: bool = True
    news2_scale: Literal[1, 2] = 1  # SpO2 scale 2 for hypercapnic respiratory failure (target 88-92 %)
    supplemental_o2: bool = False
    news2_confirm_min: int = 2  # consecutive minutes meeting the criterion before raising / clearing
    # --- spot checks (BP cuff, thermometer): one valid reading raises, the next valid one clears ---
    # NEWS2 bands (RCP 2017): systolic <= 90 mmHg scores 3, temperature >= 39.1 °C scores 2, <= 35.0 °C 3.
    # Readings flagged body movement, loose cuff or improper position never raise or clear on their own.
    bp_systolic_low: float = 90.0  # hypotension (bp_low)
    temp_high: float = 39.1  # fever (temp_high)
    temp_low: float = 35.0  # hypothermia (temp_low)
    # a reading taken longer ago than this when alerting handles it (stored on the device while the gateway
    # was away) neither raises nor clears those: beyond a limit it raises <rule>_late (low priority, engine/late.py)
    spot_late_s: float = 900.0
    # a spot check (BP, temperature) or a nurse's observation this recent counts in NEWS2 (docs/news2.md)
    news2_spot_fresh_s: float = 4 * 3600.0
    # --- slow trend against the patient's own baseline ---
    trend_enabled: bool = True
    trend_spo2_drop: float = 4.0  # median of the last 30 min this far below the baseline
    trend_hr_rise: float = 25.0
    trend_window_min: int = 30
    trend_baseline_tau_min: float = 240.0  # EWMA of minute medians older than the window
    trend_min_baseline_min: int = 60  # minutes of baseline history before the rule is armed
    # --- signal quality ---
    # strap HR and oximeter PR disagreeing by more than max(this, 15 %) make the pulse rate doubtful
    # (never the ECG) and, held for poor_signal_s, raise pulse_deficit (informational)
    hr_pr_tolerance: float = 15.0
    max_gap_s: float = 5.0  # longer gaps between valid samples restart delays and the SatSeconds sum
    delay_grace_samples: int = 2  # in-limit samples in a row that do not restart a pending delay (noise)
    # --- technical ---
    sensor_off_s: float = 30.0
    poor_signal_s: float = 60.0
    battery_low: float = 15.0
    battery_critical: float = 5.0
    device_silent_s: float = 60.0
    # a gateway's last will pages once it has lasted this long: a broker restart or a Wi-Fi blip does not
    gateway_offline_delay_s: float = 60.0
    data_gap_hold_s: float = 300.0  # a data-gap notice clears itself after this
    # --- alarm hygiene ---
    flap_window_s: float = 30.0  # a condition re-raised within this of clearing stays the same alarm


DEFAULTS: Final = Thresholds()
FIELDS: Final = frozenset(Thresholds.__struct_fields__)

# Rule profiles: the values a profile changes against the built-in (virtual-ward) defaults.
PROFILES: Final[dict[str, dict[str, Any]]] = {
    # patients at home: delays that let brief excursions and artefacts pass (the built-in defaults)
    "virtual-ward": {},
    # monitoring-grade arrhythmia alarms, the PhysioNet/CinC 2015 definitions: extreme bradycardia
    # < 40 /min for 5 beats, extreme tachycardia > 140 /min for 17 beats, asystole >= 4 s. The time
    # definitions are the fallback without RR intervals: about as long as those beats last at the limit
    # (5 beats at 40 /min = 7.5 s; 17 beats at 140 /min = 7.3 s), minus the 1 Hz rate's 4 s averaging.
    "arrhythmia": {
        "profile": "arrhythmia",
        "hr_high": 140.0,
        "hr_high_beats": 17,
        "hr_high_delay_s": 5.0,
        "hr_low_severe": 40.0,
        "hr_low_severe_beats": 5,
        "hr_low_severe_delay_s": 5.0,
        "asystole_s": 4.0,
    },
}

# Documented allowed range of every numeric setting (inclusive). Delays stop at a stated maximum: a
# longer "delay" switches a rule off in effect, which is what a threshold change must never do silently.
RANGES: Final[dict[str, tuple[float, float]]] = {
    "spo2_low": (50.0, 100.0),
    "spo2_delay_s": (0.0, 300.0),
    "spo2_severe_margin": (0.0, 40.0),
    "spo2_severe_samples": (1, 60),
    "satseconds_budget": (0.0, 10_000.0),
    "spo2_reset_margin": (0.0, 20.0),
    "spo2_reset_s": (0.0, 600.0),
    "hr_high": (60.0, 300.0),
    "hr_high_delay_s": (0.0, 300.0),
    "hr_high_beats": (0, 100),
    "hr_low": (20.0, 100.0),
    "hr_low_delay_s": (0.0, 300.0),
    "hr_low_beats": (0, 100),
    "hr_low_severe": (10.0, 100.0),
    "hr_low_severe_delay_s": (0.0, 300.0),
    "hr_low_severe_beats": (0, 100),
    "hr_reset_margin": (0.0, 50.0),
    "hr_reset_s": (0.0, 600.0),
    "asystole_s": (2.0, 10.0),  # < 2 s: normal sinus pauses; > 10 s: too late for the most urgent alarm
    "news2_confirm_min": (1, 60),
    "bp_systolic_low": (50.0, 150.0),
    "temp_high": (37.0, 42.0),
    "temp_low": (30.0, 37.0),
    "spot_late_s": (60.0, 86_400.0),
    "news2_spot_fresh_s": (60.0, 86_400.0),
    "trend_spo2_drop": (1.0, 50.0),
    "trend_hr_rise": (5.0, 150.0),
    "trend_window_min": (5, 1440),
    "trend_baseline_tau_min": (1.0, 10_080.0),
    "trend_min_baseline_min": (0, 10_080),
    "hr_pr_tolerance": (0.0, 100.0),
    "max_gap_s": (1.0, 60.0),
    "delay_grace_samples": (0, 10),
    "sensor_off_s": (0.0, 1800.0),
    "poor_signal_s": (0.0, 3600.0),
    "battery_low": (0.0, 100.0),
    "battery_critical": (0.0, 100.0),
    "device_silent_s": (5.0, 3600.0),
    "gateway_offline_delay_s": (0.0, 3600.0),
    "data_gap_hold_s": (0.0, 86_400.0),
    "flap_window_s": (0.0, 600.0),
}


def _check(th: Thresholds) -> tuple[tuple[str, ...], str] | None:
    """The first inconsistency in ``th`` as ``(keys involved, problem)``, or ``None``."""
    for key, (low, high) in RANGES.items():
        value = getattr(th, key)
        if not (isinstance(value, int | float) and math.isfinite(value)):
            return (key,), f"{value!r} is not a finite number (allowed: {low:g}..{high:g})"
        if not low <= value <= high:
            return (key,), f"{value!r} is outside the allowed range {low:g}..{high:g}"
    if not th.hr_low < th.hr_high:
        return ("hr_low", "hr_high"), f"need hr_low < hr_high (got {th.hr_low}, {th.hr_high})"
    # the severe rule must not fire at a milder rate than its sibling; an equal limit is meaningful when
    # the two differ in definition (e.g. < 40 for 5 beats, high priority, beside < 40 for 15 s)
    if not th.hr_low_severe <= th.hr_low:
        problem = f"need hr_low_severe <= hr_low (got {th.hr_low_severe}, {th.hr_low})"
        return ("hr_low_severe", "hr_low"), problem
    if th.hr_low_severe == th.hr_low and (th.hr_low_severe_beats, th.hr_low_severe_delay_s) == (
        th.hr_low_beats,
        th.hr_low_delay_s,
    ):
        problem = "hr_low_severe equals hr_low in limit and definition: lower it or give it fewer beats / seconds"
        return ("hr_low_severe", "hr_low"), problem
    if not th.battery_critical < th.battery_low:
        problem = f"need battery_critical < battery_low (got {th.battery_critical}, {th.battery_low})"
        return ("battery_low", "battery_critical"), problem
    if not th.temp_low < th.temp_high:
        return ("temp_low", "temp_high"), f"need temp_low < temp_high (got {th.temp_low}, {th.temp_high})"
    return None


def _resolve(layers: list[tuple[str, Mapping[str, Any]]], source: str) -> Thresholds:
    """Merge ``layers`` (least specific first) over the selected profile and validate the result.

    The profile is the one named by the most specific layer that names one (default ``virtual-ward``);
    its values replace the built-in defaults, and every key set in any layer still applies on top.
    """
    merged: dict[str, Any] = {}
    for where, layer in layers:
        for key in layer:
            if key not in FIELDS:
                raise ConfigError(
                    f"unknown rule setting {key!r} (known: see Thresholds)", key=f"{where}.{key}", source=source
                )
        merged.update(layer)
    name = merged.get("profile", "virtual-ward")
    if name not in PROFILES:
        where = next((w for w, layer in reversed(layers) if "profile" in layer), "defaults")
        raise ConfigError(
            f"unknown rule profile {name!r} (known: {', '.join(sorted(PROFILES))})",
            key=f"{where}.profile",
            source=source,
        )
    merged = {**PROFILES[str(name)], **merged}
    try:
        th = msgspec.convert(merged, Thresholds, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        key = message.rsplit("`$.", 1)[-1].rstrip("`") if "`$." in message else ""
        where = next((w for w, layer in reversed(layers) if key in layer), layers[-1][0] if layers else "")
        reason = message.split(" - at ")[0]
        if key in RANGES:
            reason += f" (allowed: {RANGES[key][0]:g}..{RANGES[key][1]:g})"
        raise ConfigError(reason, key=f"{where}.{key}" if key else where, source=source) from None
    problem = _check(th)
    if problem is not None:
        keys, text = problem
        for where, layer in reversed(layers):  # blame the most specific layer that set one of the keys
            found = next((k for k in keys if k in layer), None)
            if found is not None:
                raise ConfigError(text, key=f"{where}.{found}", source=source)
        raise ConfigError(text, key=f"defaults.{keys[0]}", source=source)
    return th


class RulesFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The TOML layout of a rules file (see ``deploy/alerting/rules.example.toml``)."""

    defaults: dict[str, Any] = msgspec.field(default_factory=dict)
    wards: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    patients: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


class RuleSet:
    """Immutable rule configuration; :meth:`resolve` gives a patient's :class:`Thresholds` (cached)."""

    __slots__ = ("_cache", "defaults", "patients", "source", "wards")

    def __init__(
        self,
        defaults: Mapping[str, Any] | None = None,
        wards: Mapping[str, Mapping[str, Any]] | None = None,
        patients: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        source: str = "rules",
    ) -> None:
        self.defaults: dict[str, Any] = dict(defaults or {})
        self.wards: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (wards or {}).items()}
        self.patients: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (patients or {}).items()}
        self.source = source
        self._cache: dict[tuple[str, str], Thresholds] = {}
        _resolve([("defaults", self.defaults)], source)
        for ward, layer in self.wards.items():
            _check_id(ward, f"wards.{ward}", source)
            _resolve([("defaults", self.defaults), (f"wards.{ward}", layer)], source)
        for patient, layer in self.patients.items():
            _check_id(patient, f"patients.{patient}", source)
            _resolve([("defaults", self.defaults), (f"patients.{patient}", layer)], source)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "rules") -> RuleSet:
        """Validate a parsed TOML document (``{"defaults": ..., "wards": ..., "patients": ...}``)."""
        try:
            raw = msgspec.convert(dict(data), RulesFile)
        except msgspec.ValidationError as exc:
            raise ConfigError(str(exc), source=source) from None
        return cls(raw.defaults, raw.wards, raw.patients, source=source)

    def resolve(self, ward: str, patient: str) -> Thresholds:
        """The settings for ``patient`` on ``ward`` (patient overrides win over ward settings)."""
        key = (ward, patient)
        found = self._cache.get(key)
        if found is None:
            layers: list[tuple[str, Mapping[str, Any]]] = [("defaults", self.defaults)]
            if ward in self.wards:
                layers.append((f"wards.{ward}", self.wards[ward]))
            if patient in self.patients:
                layers.append((f"patients.{patient}", self.patients[patient]))
            found = self._cache[key] = _resolve(layers, self.source)
        return found

    def with_patient_override(self, patient: str, **changes: Any) -> RuleSet:
        """A new rule set with ``changes`` merged into ``patient``'s overrides (validated; ``None`` removes a key)."""
        current = dict(self.patients.get(patient, {}))
        for key, value in changes.items():
            if key not in FIELDS:
                raise ConfigError(f"unknown rule setting {key!r}", key=f"patients.{patient}.{key}", source=self.source)
            if value is None:
                current.pop(key, None)
            else:
                current[key] = value
        patients = {**self.patients, patient: current}
        if not current:
            del patients[patient]
        for ward_layer in [{}, *self.wards.values()]:  # valid on whichever ward the patient is on
            _resolve(
                [("defaults", self.defaults), ("wards", ward_layer), (f"patients.{patient}", current)], self.source
            )
        return RuleSet(self.defaults, self.wards, patients, source=self.source)

    def replacing_patient_overrides(self, patient: str, overrides: Mapping[str, Any]) -> RuleSet:
        """A new rule set in which ``patient``'s overrides are exactly ``overrides`` (``{}`` removes them)."""
        cleared = {k: v for k, v in self.patients.items() if k != patient}
        base = RuleSet(self.defaults, self.wards, cleared, source=self.source)
        return base.with_patient_override(patient, **overrides) if overrides else base

    def with_ward(self, ward: str, **changes: Any) -> RuleSet:
        """A new rule set with ``changes`` merged into ``ward``'s settings (validated; ``None`` removes a key)."""
        current = {k: v for k, v in {**self.wards.get(ward, {}), **changes}.items() if v is not None}
        return RuleSet(self.defaults, {**self.wards, ward: current}, self.patients, source=self.source)

    def patient_overrides(self, patient: str) -> dict[str, Any]:
        """The keys overridden for ``patient`` (a copy)."""
        return dict(self.patients.get(patient, {}))

    def to_dict(self) -> dict[str, Any]:
        """The rule set in the TOML layout (for persisting or showing)."""
        return {"defaults": dict(self.defaults), "wards": dict(self.wards), "patients": dict(self.patients)}


def validate_overrides(rules: RuleSet, patient: str, overrides: Mapping[str, Any]) -> RuleSet:
    """``rules`` with ``patient``'s overrides replaced by ``overrides``, validated on every ward.

    The one check for a threshold change (API, CLI, stored overrides at start-up): every field must
    be known, of its type, finite and within :data:`RANGES`, and the resolved set consistent. Raises
    :class:`ConfigError` whose ``key`` is ``patients.<patient>.<field>`` and whose message gives the
    allowed range. Nothing is applied or saved here.
    """
    return rules.replacing_patient_overrides(patient, overrides)


def _check_id(value: str, key: str, source: str) -> None:
    if not is_identifier(value):
        raise ConfigError(f"{value!r} is not a wardwatch identifier", key=key, source=source)


def load_rules(path: Path | str | None, *, environ: Mapping[str, str] | None = None) -> RuleSet:
    """Read a rules TOML file (``None``: built-in defaults). Environment ``WARDWATCH_RULES__...`` is not applied."""
    if path is None:
        return RuleSet()
    raw = load_config(RulesFile, path, environ=environ or {})
    return RuleSet(raw.defaults, raw.wards, raw.patients, source=str(path))


def parse_rules(text: str, *, source: str = "rules") -> RuleSet:
    """Parse rules from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=source) from None
    return RuleSet.from_mapping(data, source=source)
