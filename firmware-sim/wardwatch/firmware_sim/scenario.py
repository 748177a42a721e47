"""Declarative scenarios: patients, their devices and a timeline of physiological states and faults.

A scenario is a TOML file (format in ``firmware-sim/README.md``); :func:`load_scenario` parses and
validates it into :class:`Scenario`. Durations are seconds (numbers) or strings like ``"90s"``,
``"5m"``, ``"1h30m"``. Named scenarios ship in ``wardwatch/firmware_sim/scenarios/*.toml``.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import tomllib
import zlib
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec

from wardwatch.core.ids import Identifier, check_id
from wardwatch.firmware_sim.errors import SimError

__all__ = [
    "DEFAULT_START",
    "Baseline",
    "DeviceKind",
    "DeviceSpec",
    "EventKind",
    "EventSpec",
    "PatientSpec",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "named_scenarios",
    "parse_duration",
    "scenario_from_dict",
]

DEFAULT_START: Final = dt.datetime(2025, 1, 6, 8, 0, 0, tzinfo=dt.UTC)
_DURATION_RE: Final = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


class ScenarioError(SimError):
    """A scenario file is missing or invalid; the message names the field and the fix."""


def parse_duration(value: float | int | str, what: str = "duration") -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"5m"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ScenarioError(f"{what}: expected seconds or a string like '5m', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ScenarioError(f"{what}: must not be negative, got {value}")
        return float(value)
    match = _DURATION_RE.match(value)
    if not value.strip() or match is None or not any(match.groups()):
        raise ScenarioError(f"{what}: cannot read {value!r}; use seconds or e.g. '90s', '5m', '1h30m'")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


class DeviceKind(enum.StrEnum):
    """The simulated device types."""

    HEART_RATE_STRAP = "heart_rate_strap"
    PULSE_OXIMETER = "pulse_oximeter"
    BLOOD_PRESSURE_CUFF = "blood_pressure_cuff"
    THERMOMETER = "thermometer"


class EventKind(enum.StrEnum):
    """What can happen on a patient's timeline."""

    # clinical
    DESATURATION = "desaturation"
    BRIEF_DIP = "brief_dip"
    TACHYCARDIA = "tachycardia"
    BRADYCARDIA = "bradycardia"
    # clinical, seen by spot-check devices (target: systolic mmHg / body temperature °C)
    HYPOTENSION = "hypotension"
    FEVER = "fever"
    HYPOTHERMIA = "hypothermia"
    # artefacts (motion: body movement during a cuff reading, too)
    MOTION = "motion"
    CUFF_LOOSE = "cuff_loose"
    # technical
    SENSOR_OFF = "sensor_off"
    SENSOR_DISPLACED = "sensor_displaced"
    LOW_PERFUSION = "low_perfusion"
    QUESTIONABLE = "questionable_measurement"
    INVALID = "invalid_measurement"
    BATTERY_DRAIN = "battery_drain"
    OUT_OF_RANGE = "out_of_range"
    BUSY = "busy"


SPOT_CLINICAL_EVENTS: Final = frozenset({EventKind.HYPOTENSION, EventKind.FEVER, EventKind.HYPOTHERMIA})
CLINICAL_EVENTS: Final = (
    frozenset({EventKind.DESATURATION, EventKind.BRIEF_DIP, EventKind.TACHYCARDIA, EventKind.BRADYCARDIA})
    | SPOT_CLINICAL_EVENTS
)
ARTEFACT_EVENTS: Final = frozenset({EventKind.MOTION, EventKind.CUFF_LOOSE})
OXIMETER_ONLY: Final = frozenset(
    {EventKind.SENSOR_DISPLACED, EventKind.LOW_PERFUSION, EventKind.QUESTIONABLE, EventKind.INVALID}
)
CUFF_ONLY: Final = frozenset({EventKind.CUFF_LOOSE})
SPOT_CHECK_KINDS: Final = frozenset({DeviceKind.BLOOD_PRESSURE_CUFF, DeviceKind.THERMOMETER})
_NEEDS_TARGET: Final = frozenset({EventKind.DESATURATION, EventKind.TACHYCARDIA, EventKind.BRADYCARDIA}) | (
    SPOT_CLINICAL_EVENTS
)


class Baseline(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A patient's resting physiology and its variability."""

    hr: float = 72.0
    spo2: float = 97.0
    pai: float = 4.0  # pulse amplitude index / perfusion index, %
    hr_drift_sd: float = 3.0  # slow HR wander, bpm
    spo2_noise_sd: float = 0.4
    hrv: float = 0.04  # respiratory sinus arrhythmia depth (fraction of RR)
    resp_rate: float = 14.0  # breaths/min (RSA frequency)
    systolic: float = 124.0  # mmHg (cuff readings)
    diastolic: float = 78.0  # mmHg
    temperature: float = 36.8  # °C (thermometer readings)


class DeviceSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One wearable: identity, advertising name, battery and clock behaviour."""

    kind: DeviceKind
    id: Identifier
    name: str = ""
    address: str = ""  # static random BLE address; derived from the id when empty
    manufacturer: str = "wardwatch-sim"
    model: str = ""
    serial: str = ""
    firmware: str = "1.0.0"
    battery: float = 95.0
    battery_drain_per_hour: float = 0.5
    clock: str = "set"  # "set" | "unset"
    clock_drift_ppm: float = 0.0
    # spot-check period in s: the oximeter's extra spot-checks (0: none); the reading schedule of a cuff
    # or thermometer (required for them: they only measure when the patient takes a reading)
    spot_check_every: float = 0.0
    first_reading: float = 0.0  # cuff / thermometer: s after the start of the first reading (0: one period in)
    storage_capacity: int = 100


class EventSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One timeline entry. ``duration`` is the hold at target; ``onset``/``recovery`` ramp to/from it."""

    kind: EventKind
    at: float
    duration: float = 60.0
    onset: float = 0.0
    recovery: float = 0.0
    target: float | None = None  # SpO2 % or HR bpm at the nadir/peak; battery % for battery_drain
    severity: float = 0.5  # motion strength 0..1
    device: str | None = None  # device id; default: every device the event applies to
    should_page: bool | None = None  # override the default rule (see README)

    @property
    def end(self) -> float:
        """Seconds after the scenario start when the event is over."""
        return self.at + self.onset + self.duration + self.recovery


class PatientSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A patient (pseudonymous id), the gateway that serves them, their devices and timeline."""

    id: Identifier
    gateway: str = ""
    baseline: Baseline = msgspec.field(default_factory=Baseline)
    devices: list[DeviceSpec] = msgspec.field(default_factory=list)
    events: list[EventSpec] = msgspec.field(default_factory=list)
    seed: int | None = None

    @property
    def gateway_id(self) -> str:
        """The gateway id used in wire messages (default ``gw-<patient id>``)."""
        return self.gateway or check_id(f"gw-{self.id}"[:64], "gateway id")


class Scenario(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A validated scenario."""

    name: str
    duration: float
    patients: list[PatientSpec]
    description: str = ""
    seed: int = 0
    start: dt.datetime = DEFAULT_START
    ward: Identifier = "ward-sim"

    @property
    def start_ms(self) -> int:
        """Scenario start as ms since the Unix epoch."""
        return round(self.start.timestamp() * 1000)

    def patient_seed(self, patient: PatientSpec) -> list[int]:
        """Seed material of one patient's RNG (stable across runs and Python versions)."""
        return [self.seed, patient.seed if patient.seed is not None else zlib.crc32(patient.id.encode())]

    def devices(self) -> list[tuple[PatientSpec, DeviceSpec]]:
        """Every (patient, device) pair in file order."""
        return [(p, d) for p in self.patients for d in p.devices]


_DURATION_FIELDS: Final = {"at", "duration", "onset", "recovery"}


def _normalise(raw: dict[str, Any]) -> dict[str, Any]:
    """Turn duration strings into seconds so msgspec can validate the rest."""
    out = dict(raw)
    if "duration" in out:
        out["duration"] = parse_duration(out["duration"], "scenario duration")
    patients = []
    for i, patient in enumerate(out.get("patients", [])):
        p = dict(patient)
        devices = []
        for j, device in enumerate(p.get("devices", [])):
            d = dict(device)
            for key in ("spot_check_every", "first_reading"):
                if key in d:
                    d[key] = parse_duration(d[key], f"patients[{i}].devices[{j}].{key}")
            devices.append(d)
        p["devices"] = devices
        events = []
        for j, event in enumerate(p.get("events", [])):
            e = dict(event)
            for key in _DURATION_FIELDS & e.keys():
                e[key] = parse_duration(e[key], f"patients[{i}].events[{j}].{key}")
            events.append(e)
        p["events"] = events
        patients.append(p)
    out["patients"] = patients
    return out


def _check(scenario: Scenario) -> Scenario:
    if scenario.duration <= 0:
        raise ScenarioError("duration: must be positive")
    if scenario.start.tzinfo is None:
        raise ScenarioError("start: give a time zone, e.g. 2025-01-06T08:00:00Z")
    seen: set[str] = set()
    for patient in scenario.patients:
        if not patient.devices:
            raise ScenarioError(f"patient {patient.id}: needs at least one device")
        if patient.gateway:
            check_id(patient.gateway, "gateway id")
        ids = {d.id for d in patient.devices}
        for device in patient.devices:
            if device.id in seen:
                raise ScenarioError(f"device id {device.id!r} is used twice; device ids must be unique")
            seen.add(device.id)
            if device.clock not in {"set", "unset"}:
                raise ScenarioError(f"device {device.id}: clock must be 'set' or 'unset', got {device.clock!r}")
            if device.kind in SPOT_CHECK_KINDS and device.spot_check_every <= 0:
                raise ScenarioError(
                    f"device {device.id}: a {device.kind} measures only when the patient takes a reading; "
                    "give its schedule, e.g. spot_check_every = '4h'"
                )
        kinds = {d.id: d.kind for d in patient.devices}
        for event in patient.events:
            if event.device is not None and event.device not in ids:
                raise ScenarioError(f"patient {patient.id}: event {event.kind} names unknown device {event.device!r}")
            if event.kind in CUFF_ONLY and event.device is not None and kinds[event.device] != "blood_pressure_cuff":
                raise ScenarioError(f"patient {patient.id}: event {event.kind} applies to a blood_pressure_cuff only")
            if event.kind in _NEEDS_TARGET and (event.target is None):
                raise ScenarioError(f"patient {patient.id}: event {event.kind} at {event.at:g} s needs a target")
    return scenario


def scenario_from_dict(raw: dict[str, Any], source: str = "<dict>") -> Scenario:
    """Validate a scenario given as a dict (the parsed TOML)."""
    try:
        return _check(msgspec.convert(_normalise(raw), Scenario, strict=False))
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def named_scenarios() -> dict[str, Path]:
    """The scenario library shipped with the package, by name."""
    folder = resources.files("wardwatch.firmware_sim") / "scenarios"
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario file, or a named scenario from the shipped library."""
    path = Path(name_or_path)
    if not path.exists():
        library = named_scenarios()
        if str(name_or_path) not in library:
            raise ScenarioError(
                f"no scenario file {str(name_or_path)!r} and no named scenario of that name "
                f"(named: {', '.join(sorted(library))})"
            )
        path = library[str(name_or_path)]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    return scenario_from_dict(raw, str(path))
