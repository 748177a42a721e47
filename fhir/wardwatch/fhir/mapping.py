"""wardwatch wire messages -> FHIR R4 resources and ``transaction`` Bundles (HL7 Personal Health Device IG).

One *window* is the samples of one (patient, device, signal) series in one interval of ``interval_s``
seconds, aligned to the epoch. It becomes, per ``representation``:

* ``summary``: one Observation whose ``valueQuantity`` is the mean of the interval's valid samples, with
  ``effectivePeriod`` from the first to the last sample;
* ``sampled``: one Observation whose ``valueSampledData`` holds every sample slot of the interval
  (``E`` where a sample is missing or invalid), for the 1 Hz signals (RR intervals have no fixed
  period: they are always summarised);
* ``both``: the two.

Every Observation is a conditional create (``ifNoneExist``) on an identifier built from patient, device,
MDC code, representation, interval and window start, so redelivery, restarts and backfill never duplicate it.
Patient, sensor Device (MDC 65573) and gateway Device (MDC 531981) are conditional creates on their
pseudonymous identifiers; a device status becomes a conditional update of its Device (manufacturer, model,
serial, firmware as the device reported them, and the patient it is bound to).

Device status flags: a sample flagged invalid (or without a value) is never averaged; an interval with
no valid sample has ``dataAbsentReason`` instead of a value (``error``, or the IEEE-11073 special value's
code); a questionable sample that is used sets ``interpretation`` to the measurement-status
``questionable``. No value is ever invented.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from wardwatch.core.schema import (
    AbsentReason,
    Alarm,
    AlarmState,
    DeviceStatus,
    News2,
    News2Score,
    Priority,
    Quality,
    Sample,
    Signal,
)
from wardwatch.fhir.config import ExportSettings, Representation

__all__ = [
    "BUNDLE_CONTENT_TYPE",
    "EXPORTED_SIGNALS",
    "SIGNAL_CODES",
    "BundleBuilder",
    "SignalCode",
    "Window",
    "observations",
    "series_signal",
    "window_start",
]

Resource = dict[str, Any]

BUNDLE_CONTENT_TYPE: Final = "application/fhir+json"
MDC: Final = "urn:iso:std:iso:11073:10101"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON: Final = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
MEASUREMENT_STATUS: Final = "http://hl7.org/fhir/uv/pocd/CodeSystem/measurement-status"
GATEWAY_DEVICE_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
BLUETOOTH_SYSTEM: Final = "http://hl7.org/fhir/sid/eui-48/bluetooth"

FLAG_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_PRIORITY_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/flag-priority"
FLAG_PRIORITY: Final = "http://hl7.org/fhir/flag-priority-code"
FLAG_DETAIL_EXTENSION: Final = "http://hl7.org/fhir/StructureDefinition/flag-detail"
ALARM_RULE_SYSTEM: Final = "urn:wardwatch:alarm-rule"
SNOMED: Final = "http://snomed.info/sct"
SCORE_SYSTEM: Final = "urn:wardwatch:score"
#: IEEE 11073-10101 partition 3 (alert) condition codes, as in IHE PCD ACM and the R6 DeviceAlert examples:
#: the limit alarms are "value above/below its limit"; the parameter is in the Flag's text.
MDC_EVT_HI: Final = ("196648", "MDC_EVT_HI")
MDC_EVT_LO: Final = ("196670", "MDC_EVT_LO")
ALARM_CONDITION_CODES: Final = {
    "spo2_low": MDC_EVT_LO,
    "spo2_low_severe": MDC_EVT_LO,
    "hr_low": MDC_EVT_LO,
    "hr_low_severe": MDC_EVT_LO,
    "hr_high": MDC_EVT_HI,
}
#: SNOMED CT (UK edition) NEWS2 sub-score observables (UK Core EarlyWarningSubScore value set).
_RCP_NEWS2: Final = "Royal College of Physicians National Early Warning Score 2 -"
NEWS2_SPO2_SCALE_CODES: Final = {
    1: ("1104311000000102", f"{_RCP_NEWS2} oxygen saturation scale 1 score"),
    2: ("1104321000000108", f"{_RCP_NEWS2} oxygen saturation scale 2 score"),
}
NEWS2_AIR_OR_OXYGEN: Final = ("1104331000000105", f"{_RCP_NEWS2} air or oxygen score")
NEWS2_PULSE: Final = ("1104351000000103", f"{_RCP_NEWS2} pulse score")
NEWS2_RESPIRATION: Final = ("1104301000000104", f"{_RCP_NEWS2} respiration rate score")
NEWS2_SYSTOLIC: Final = ("1104341000000101", f"{_RCP_NEWS2} systolic blood pressure score")
NEWS2_CONSCIOUSNESS: Final = ("1104361000000100", f"{_RCP_NEWS2} consciousness score")
NEWS2_TEMPERATURE: Final = ("1104371000000107", f"{_RCP_NEWS2} temperature score")
#: SNOMED CT (UK edition) NEWS2 total score: only for a full score (all seven parameters recent).
NEWS2_TOTAL: Final = (
    "1104051000000101",
    "Royal College of Physicians NEWS2 (National Early Warning Score 2) total score",
)
PARTIAL_NEWS2: Final = ("news2-partial", "Partial NEWS2: SpO2, air or oxygen and pulse sub-scores only")
_PRIORITY_CODES: Final = {
    Priority.HIGH: ("PH", "High priority"),
    Priority.MEDIUM: ("PM", "Medium priority"),
    Priority.LOW: ("PL", "Low priority"),
}

SENSOR_DEVICE_TYPE: Final = ("65573", "MDC_MOC_VMS_MDS_SIMP")
GATEWAY_DEVICE_TYPE: Final = ("531981", "MDC_MOC_VMS_MDS_AHD")


@dataclass(frozen=True, slots=True)
class SignalCode:
    """How one wardwatch signal is coded in FHIR."""

    mdc: str
    mdc_display: str
    loinc: tuple[tuple[str, str], ...]
    unit: str  # UCUM
    scale: float  # wire value * scale = value in ``unit``
    period_ms: int | None  # nominal sample period; None: irregular (never valueSampledData)


SIGNAL_CODES: Final[dict[Signal, SignalCode]] = {
    Signal.HEART_RATE: SignalCode("147842", "MDC_ECG_HEART_RATE", (("8867-4", "Heart rate"),), "/min", 1.0, 1000),
    Signal.PULSE_RATE: SignalCode("149530", "MDC_PULS_OXIM_PULS_RATE", (("8867-4", "Heart rate"),), "/min", 1.0, 1000),
    Signal.SPO2: SignalCode(
        "150456",
        "MDC_PULS_OXIM_SAT_O2",
        (
            ("2708-6", "Oxygen saturation in Arterial blood"),
            ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"),
        ),
        "%",
        1.0,
        1000,
    ),
    # RR intervals travel in seconds; the PHD IG reports them in ms.
    Signal.RR_INTERVAL: SignalCode("147240", "MDC_ECG_TIME_PD_RR_GL", (), "ms", 1000.0, None),
}

#: Spot-check signals (cuff, thermometer): one Observation per reading (:mod:`wardwatch.fhir.spot_checks`).
#: A cuff's three pressures travel as three signals and become one blood-pressure panel: they share the
#: systolic series (window key) and sit in its window as components.
PANEL_OF: Final[dict[Signal, Signal]] = {
    Signal.DIASTOLIC_BP: Signal.SYSTOLIC_BP,
    Signal.MEAN_ARTERIAL_PRESSURE: Signal.SYSTOLIC_BP,
}
SPOT_SIGNALS: Final = frozenset({Signal.SYSTOLIC_BP, *PANEL_OF, Signal.BODY_TEMPERATURE})
EXPORTED_SIGNALS: Final = frozenset(SIGNAL_CODES) | SPOT_SIGNALS
"""Every signal that reaches the record (battery, perfusion index, energy do not)."""


def series_signal(signal: Signal) -> Signal:
    """The signal whose window holds ``signal``'s samples (the systolic one for a cuff's other pressures)."""
    return PANEL_OF.get(signal, signal)


#: Flags that make a sample's value unusable (never averaged); PHD: measurement status "invalid".
INVALID_FLAGS: Final = frozenset(
    {Quality.INVALID, Quality.UNAVAILABLE, Quality.SENSOR_FAULT, Quality.SENSOR_UNCONNECTED, Quality.CONTACT_LOST}
)
#: Flags that make a used value questionable; PHD: measurement status "questionable" -> interpretation.
QUESTIONABLE_FLAGS: Final = frozenset(
    {Quality.QUESTIONABLE, Quality.EARLY_ESTIMATE, Quality.POOR_SIGNAL, Quality.LOW_PERFUSION, Quality.SENSOR_DISPLACED}
)

_ABSENT_CODES: Final[dict[AbsentReason, tuple[str, str]]] = {
    AbsentReason.NAN: ("not-a-number", "Not a Number (NaN)"),
    AbsentReason.POSITIVE_INFINITY: ("positive-infinity", "Positive Infinity (PINF)"),
    AbsentReason.NEGATIVE_INFINITY: ("negative-infinity", "Negative Infinity (NINF)"),
}
_ERROR: Final = ("error", "Error")
_UUID_NAMESPACE: Final = uuid.UUID("7c4c2b8e-3f5e-4b59-9a6e-0d4b3f1a9e21")


def window_start(t_ms: int, interval_s: int) -> int:
    """Start (ms) of the epoch-aligned interval holding ``t_ms``."""
    interval_ms = interval_s * 1000
    return t_ms - t_ms % interval_ms


def _instant(t_ms: int) -> str:
    return datetime.fromtimestamp(t_ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class Window:
    """The samples of one series in one interval (``start`` ms, ``interval_s`` long)."""

    patient: str
    device: str
    gateway: str
    signal: Signal
    start: int
    interval_s: int
    samples: dict[int, Sample] = field(default_factory=dict)  # by sample time: a redelivered sample counts once
    components: dict[Signal, dict[int, Sample]] = field(default_factory=dict)  # a BP panel's other pressures

    def add(self, sample: Sample) -> None:
        """Add a sample (the later of two with the same time wins, like InfluxDB)."""
        self.samples[sample.t] = sample

    def put(self, signal: Signal, sample: Sample) -> None:
        """Add a sample of ``signal``: this window's own, or a component of its panel (see :data:`PANEL_OF`)."""
        if signal is self.signal:
            self.samples[sample.t] = sample
        else:
            self.components.setdefault(signal, {})[sample.t] = sample

    def sorted_samples(self) -> list[Sample]:
        """The samples in time order."""
        return [self.samples[t] for t in sorted(self.samples)]


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _is_valid(sample: Sample) -> bool:
    return sample.v is not None and not INVALID_FLAGS.intersection(sample.q)


def _absent_reason(samples: Sequence[Sample]) -> dict[str, Any]:
    reasons = {s.absent for s in samples if s.v is None and s.absent in _ABSENT_CODES}
    code, display = _ABSENT_CODES[reasons.pop()] if len(reasons) == 1 and all(s.v is None for s in samples) else _ERROR
    return {"coding": [_coding(DATA_ABSENT_REASON, code, display)]}


def _questionable(samples: Iterable[Sample]) -> list[dict[str, Any]]:
    if any(QUESTIONABLE_FLAGS.intersection(s.q) for s in samples):
        return [{"coding": [_coding(MEASUREMENT_STATUS, "questionable", "Questionable")]}]
    return []


def _number(value: float) -> float | int:
    rounded = round(value, 1)
    return int(rounded) if rounded == int(rounded) else rounded


def _base(window: Window, code: SignalCode, kind: str, settings: ExportSettings) -> tuple[Resource, str]:
    value = f"{window.patient}/{window.device}/{code.mdc}/{kind}-{window.interval_s}s/{window.start}"
    codings = [_coding(MDC, code.mdc, code.mdc_display)] + [_coding(LOINC, c, d) for c, d in code.loinc]
    resource: Resource = {
        "resourceType": "Observation",
        "identifier": [{"system": settings.identifiers.observation, "value": value}],
        "status": "final",
        "category": [{"coding": [_coding(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")]}],
        "code": {"coding": codings},
    }
    return resource, f"{settings.identifiers.observation}|{value}"


def _summary(window: Window, code: SignalCode, settings: ExportSettings) -> tuple[Resource, str]:
    samples = window.sorted_samples()
    resource, identifier = _base(window, code, "summary", settings)
    resource["effectivePeriod"] = {"start": _instant(samples[0].t), "end": _instant(samples[-1].t)}
    valid = [s for s in samples if _is_valid(s)]
    if valid:
        mean = sum(float(s.v) for s in valid if s.v is not None) / len(valid) * code.scale
        resource["valueQuantity"] = _quantity(_number(mean), code.unit)
        interpretation = _questionable(valid)
        if interpretation:
            resource["interpretation"] = interpretation
    else:
        resource["dataAbsentReason"] = _absent_reason(samples)
    return resource, identifier


def _sampled(window: Window, code: SignalCode, period_ms: int, settings: ExportSettings) -> tuple[Resource, str]:
    samples = window.sorted_samples()
    first = samples[0].t
    slots: dict[int, str] = {}
    for sample in samples:
        index = round((sample.t - first) / period_ms)
        if _is_valid(sample) and sample.v is not None:
            slots[index] = f"{_number(sample.v * code.scale)}"
        else:
            slots.setdefault(index, "E")
    last = max(slots)
    resource, identifier = _base(window, code, "sampled", settings)
    resource["effectivePeriod"] = {"start": _instant(first), "end": _instant(first + last * period_ms)}
    valid = [s for s in samples if _is_valid(s)]
    if valid:
        resource["valueSampledData"] = {
            "origin": _quantity(0, code.unit),
            "period": period_ms,
            "dimensions": 1,
            "data": " ".join(slots.get(i, "E") for i in range(last + 1)),
        }
        interpretation = _questionable(valid)
        if interpretation:
            resource["interpretation"] = interpretation
    else:
        resource["dataAbsentReason"] = _absent_reason(samples)
    return resource, identifier


def observations(window: Window, settings: ExportSettings) -> list[tuple[Resource, str]]:
    """The Observations of a window (without subject and device references) with their identifiers.

    Empty for a signal that is not exported (battery, perfusion index, energy). Spot checks (cuff,
    thermometer): one Observation per reading, whatever the representation.
    """
    if window.signal in SPOT_SIGNALS:
        from wardwatch.fhir.spot_checks import spot_observations  # it builds on this module's helpers

        return spot_observations(window, settings)
    code = SIGNAL_CODES.get(window.signal)
    if code is None or not window.samples:
        return []
    representation: Representation = settings.representation
    out: list[tuple[Resource, str]] = []
    if representation in ("summary", "both") or code.period_ms is None:
        out.append(_summary(window, code, settings))
    if representation in ("sampled", "both") and code.period_ms is not None:
        out.append(_sampled(window, code, code.period_ms, settings))
    return out


def _score(points: int) -> Resource:
    return {"value": points, "unit": "{score}", "system": UCUM, "code": "{score}"}


def _if_none_exist(identifier: str) -> str:
    return "identifier=" + quote(identifier, safe="")


class BundleBuilder:
    """Builds one ``transaction`` Bundle; Patient and Device entries are shared by identifier."""

    def __init__(self, settings: ExportSettings) -> None:
        self._settings = settings
        self.entries: list[Resource] = []
        self._refs: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _full_url(self, identifier: str) -> str:
        return f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, identifier)}"

    def _conditional_create(self, resource: Resource, identifier: str) -> str:
        ref = self._refs.get(identifier)
        if ref is None:
            ref = self._refs[identifier] = self._full_url(identifier)
            self.entries.append(
                {
                    "fullUrl": ref,
                    "resource": resource,
                    "request": {
                        "method": "POST",
                        "url": resource["resourceType"],
                        "ifNoneExist": _if_none_exist(identifier),
                    },
                }
            )
        return ref

    def patient(self, patient: str) -> str:
        """Reference to the Patient with pseudonymous identifier ``patient`` (and nothing else)."""
        system = self._settings.identifiers.patient
        resource = {"resourceType": "Patient", "identifier": [{"system": system, "value": patient}]}
        return self._conditional_create(resource, f"{system}|{patient}")

    def _device_identifiers(self, device: str) -> list[dict[str, str]]:
        identifiers = [{"system": self._settings.identifiers.device, "value": device}]
        address = self._settings.bluetooth_addresses.get(device)
        if address is not None:
            identifiers.append({"system": BLUETOOTH_SYSTEM, "value": address.upper().replace(":", "-")})
        return identifiers

    @staticmethod
    def _type(code: tuple[str, str]) -> dict[str, Any]:
        return {"coding": [_coding(MDC, *code)]}

    def sensor(self, device: str) -> str:
        """Reference to the sensor Device (PHD: MDC_MOC_VMS_MDS_SIMP)."""
        resource = {
            "resourceType": "Device",
            "identifier": self._device_identifiers(device),
            "type": self._type(SENSOR_DEVICE_TYPE),
        }
        return self._conditional_create(resource, f"{self._settings.identifiers.device}|{device}")

    def gateway(self, gateway: str) -> str:
        """Reference to the gateway Device (PHD: MDC_MOC_VMS_MDS_AHD)."""
        system = self._settings.identifiers.gateway
        resource = {
            "resourceType": "Device",
            "identifier": [{"system": system, "value": gateway}],
            "type": self._type(GATEWAY_DEVICE_TYPE),
        }
        return self._conditional_create(resource, f"{system}|{gateway}")

    def window(self, window: Window) -> int:
        """Add a window's Observations (with Patient and Devices); returns how many Observations."""
        found = observations(window, self._settings)
        if not found:
            return 0
        subject = self.patient(window.patient)
        sensor = self.sensor(window.device)
        gateway = self.gateway(window.gateway)
        for resource, identifier in found:
            resource["subject"] = {"reference": subject}
            resource["device"] = {"reference": sensor}
            resource["extension"] = [{"url": GATEWAY_DEVICE_EXTENSION, "valueReference": {"reference": gateway}}]
            self._conditional_create(resource, identifier)
        return len(found)

    def device_status(self, status: DeviceStatus) -> None:
        """Conditional update of the sensor Device with what the device reported about itself."""
        system = self._settings.identifiers.device
        identifier = f"{system}|{status.device}"
        if identifier in self._refs:
            raise ValueError(f"device {status.device} is already in this Bundle: put its status in another one")
        subject = self.patient(status.patient)
        resource: Resource = {
            "resourceType": "Device",
            "identifier": self._device_identifiers(status.device),
            "type": self._type(SENSOR_DEVICE_TYPE),
            "patient": {"reference": subject},
        }
        if status.manufacturer is not None:
            resource["manufacturer"] = status.manufacturer
        if status.model is not None:
            resource["modelNumber"] = status.model
        if status.serial is not None:
            resource["serialNumber"] = status.serial
        if status.firmware is not None:
            resource["version"] = [{"value": status.firmware}]
        ref = self._refs[identifier] = self._full_url(identifier)
        self.entries.append(
            {
                "fullUrl": ref,
                "resource": resource,
                "request": {"method": "PUT", "url": "Device?" + _if_none_exist(identifier)},
            }
        )

    def alarm(self, alarm: Alarm) -> int:
        """A physiological alarm as a Flag (identifier: the alarm id; period: raised to resolved); returns the
        number of Observations added (1 with the partial NEWS2 of a ``news2_*`` alarm, else 0).

        Raised, acknowledged and silenced are conditional creates (a redelivered older state never
        overwrites a newer one); resolved is a conditional update that sets ``inactive`` and the period's end.
        ``Flag.code`` carries the IEEE 11073 alert condition (``MDC_EVT_LO``/``MDC_EVT_HI``) where the rule is
        a limit alarm, and the wardwatch rule.
        """
        system = self._settings.identifiers.alarm
        identifier = f"{system}|{alarm.alarm_id}"
        if identifier in self._refs:
            raise ValueError(f"alarm {alarm.alarm_id} is already in this Bundle: put its next state in another one")
        resolved = alarm.state is AlarmState.RESOLVED
        code, display = _PRIORITY_CODES[alarm.priority]
        period = {"start": _instant(alarm.started)}
        if resolved:
            period["end"] = _instant(max(alarm.t, alarm.started))
        codings = [{"system": ALARM_RULE_SYSTEM, "code": alarm.rule}]
        condition = ALARM_CONDITION_CODES.get(alarm.rule)
        if condition is not None:
            codings.insert(0, _coding(MDC, *condition))
        extensions: list[Resource] = [
            {
                "url": FLAG_PRIORITY_EXTENSION,
                "valueCodeableConcept": {"coding": [_coding(FLAG_PRIORITY, code, display)]},
            }
        ]
        if alarm.news2 is not None:
            score = self._partial_news2(alarm, alarm.news2)
            extensions.append({"url": FLAG_DETAIL_EXTENSION, "valueReference": {"reference": score}})
        resource: Resource = {
            "resourceType": "Flag",
            "identifier": [{"system": system, "value": alarm.alarm_id}],
            "extension": extensions,
            "status": "inactive" if resolved else "active",
            "category": [{"coding": [_coding(FLAG_CATEGORY, "clinical", "Clinical")]}],
            "code": {"coding": codings, "text": alarm.text or alarm.rule},
            "subject": {"reference": self.patient(alarm.patient)},
            "period": period,
        }
        if resolved:
            ref = self._refs[identifier] = self._full_url(identifier)
            self.entries.append(
                {
                    "fullUrl": ref,
                    "resource": resource,
                    "request": {"method": "PUT", "url": "Flag?" + _if_none_exist(identifier)},
                }
            )
        else:
            self._conditional_create(resource, identifier)
        return 0 if alarm.news2 is None else 1

    def news2_score(self, message: News2Score) -> int:
        """A patient's NEWS2 from the score stream as one Observation (conditional create on patient and time).

        Coded as the SNOMED CT NEWS2 total only when ``full`` (all seven parameters recent); a partial
        score is ``urn:wardwatch:score|news2-partial`` with the missing parameters in its text. The
        sub-scores scored are components with their SNOMED CT codes. Returns the number of Observations (1).
        """
        value = f"{message.patient}/news2/{message.t}"
        self._news2_observation(message.patient, message.t, message.news2, value)
        return 1

    def _news2_observation(self, patient: str, t: int, news2: News2, value: str) -> str:
        system = self._settings.identifiers.observation
        if news2.full:
            code: Resource = {"coding": [_coding(SNOMED, *NEWS2_TOTAL)], "text": "NEWS2 total score"}
        else:
            missing = ", ".join(m.replace("_", " ") for m in news2.missing) or "none"
            code = {
                "coding": [_coding(SCORE_SYSTEM, *PARTIAL_NEWS2)],
                "text": f"partial NEWS2 (missing: {missing}): a lower bound of the NEWS2 total",
            }
        components = [
            (NEWS2_RESPIRATION, news2.respiration),
            (NEWS2_SPO2_SCALE_CODES[news2.spo2_scale], news2.spo2),
            (NEWS2_AIR_OR_OXYGEN, news2.o2),
            (NEWS2_SYSTOLIC, news2.systolic),
            (NEWS2_PULSE, news2.pulse),
            (NEWS2_CONSCIOUSNESS, news2.consciousness),
            (NEWS2_TEMPERATURE, news2.temperature),
        ]
        resource: Resource = {
            "resourceType": "Observation",
            "identifier": [{"system": system, "value": value}],
            "status": "final",
            "category": [{"coding": [_coding(OBSERVATION_CATEGORY, "survey", "Survey")]}],
            "code": code,
            "subject": {"reference": self.patient(patient)},
            "effectiveDateTime": _instant(t),
            "valueQuantity": _score(news2.score),
            "component": [
                {"code": {"coding": [_coding(SNOMED, *sub)]}, "valueQuantity": _score(points)}
                for sub, points in components
                if points is not None
            ],
        }
        return self._conditional_create(resource, f"{system}|{value}")

    def _partial_news2(self, alarm: Alarm, news2: News2) -> str:
        """The NEWS2 that raised a ``news2_*`` alarm, as an Observation with SNOMED CT sub-scores.

        Coded as the NEWS2 total score (SNOMED CT 1104051000000101) only when full: a partial score is a
        lower bound, and a record system would show it as the patient's NEWS2.
        """
        value = f"{alarm.patient}/{PARTIAL_NEWS2[0]}/{alarm.alarm_id}"
        return self._news2_observation(alarm.patient, alarm.started, news2, value)

    def bundle(self) -> Resource:
        """The ``transaction`` Bundle."""
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
