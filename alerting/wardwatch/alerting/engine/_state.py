"""The engine's rule table (:data:`RULES`), its constants and its per-patient, per-device and per-gateway state."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Final

from wardwatch.alerting.engine._filters import CONFIRM_SAMPLES, HAMPEL_FLOOR, PLAUSIBLE, Hampel, OnsetFilter
from wardwatch.alerting.engine._rules import MinuteSeries, Threshold
from wardwatch.alerting.engine.capacity import OVER_CAPACITY, OVER_CAPACITY_PRIORITY
from wardwatch.alerting.engine.news2 import News2Score, Observed, Param
from wardwatch.alerting.rules import Thresholds
from wardwatch.core.profiles import PROFILES, SIGNAL_ROLES
from wardwatch.core.schema import AlarmCategory, DeviceRole, News2, Priority, Quality, Signal

PHYS: Final = AlarmCategory.PHYSIOLOGICAL
TECH: Final = AlarmCategory.TECHNICAL
HIGH: Final = Priority.HIGH
MEDIUM: Final = Priority.MEDIUM
LOW: Final = Priority.LOW

# rule base name -> (category, priority, rules that hold it back while shown, rule it releases when it clears)
RULES: Final[dict[str, tuple[AlarmCategory, Priority, tuple[str, ...], str | None]]] = {
    "spo2_low_severe": (PHYS, HIGH, (), "spo2_low"),
    "spo2_low": (PHYS, MEDIUM, ("spo2_low_severe",), None),
    "hr_high": (PHYS, MEDIUM, (), None),
    "asystole": (PHYS, HIGH, (), "hr_low_severe"),
    "hr_low_severe": (PHYS, HIGH, ("asystole",), "hr_low"),
    "hr_low": (PHYS, MEDIUM, ("hr_low_severe",), None),
    "news2_emergency": (PHYS, HIGH, (), None),
    # an urgent partial NEWS2 adds nothing while a threshold alarm for the same patient is up
    "news2_urgent": (
        PHYS,
        MEDIUM,
        ("news2_emergency", "spo2_low", "spo2_low_severe", "hr_high", "hr_low", "hr_low_severe"),
        None,
    ),
    "spo2_trend": (PHYS, LOW, (), None),
    "hr_trend": (PHYS, LOW, (), None),
    "sensor_off": (TECH, MEDIUM, (), None),
    "poor_signal": (TECH, LOW, ("sensor_off",), None),
    "pulse_deficit": (PHYS, LOW, (), None),
    # the strap's ECG shows no QRS since contact while the oximeter shows a pulse (see _no_beat)
    "strap_no_qrs": (TECH, MEDIUM, (), None),
    "signal_doubtful": (TECH, LOW, (), None),
    "battery_critical": (TECH, MEDIUM, (), "battery_low"),
    "battery_low": (TECH, LOW, ("battery_critical",), None),
    "device_silent": (TECH, MEDIUM, (), None),
    "gateway_offline": (TECH, MEDIUM, (), None),
    OVER_CAPACITY: (TECH, OVER_CAPACITY_PRIORITY, (), None),  # per gateway, to the operator (engine/capacity.py)
    "data_gap": (TECH, LOW, (), None),
    # spot checks (cuff, thermometer): one valid reading decides, the next one clears (see _spot_reading)
    "bp_low": (PHYS, MEDIUM, (), None),
    "temp_high": (PHYS, MEDIUM, (), None),
    "temp_low": (PHYS, MEDIUM, (), None),
    # a reading beyond those limits that arrives late: a low-priority notice instead (engine/late.py)
    "bp_low_late": (PHYS, LOW, (), None),
    "temp_high_late": (PHYS, LOW, (), None),
    "temp_low_late": (PHYS, LOW, (), None),
}

# signal kinds on the hot path
_OTHER, _SPO2, _HR, _PR, _BATTERY, _RR, _SBP, _TEMP, _SPOT_OTHER = 0, 1, 2, 3, 4, 5, 6, 7, 8
_KIND: Final = {
    # every signal of a spot-check device (diastolic, MAP...) takes the spot-check path; the two with
    # rules of their own are set below
    **{s: _SPOT_OTHER for p in PROFILES if p.spot_check for s in p.signals},
    Signal.SPO2: _SPO2,
    Signal.HEART_RATE: _HR,
    Signal.PULSE_RATE: _PR,
    Signal.BATTERY: _BATTERY,
    Signal.RR_INTERVAL: _RR,
    Signal.SYSTOLIC_BP: _SBP,
    Signal.BODY_TEMPERATURE: _TEMP,
}
_ROLE_OF_SIGNAL: Final = dict(SIGNAL_ROLES)  # the core profile table
_ROLE_TEXT: Final = {
    DeviceRole.HEART_RATE_STRAP: "HR strap",
    DeviceRole.PULSE_OXIMETER: "pulse oximeter",
    DeviceRole.BLOOD_PRESSURE_CUFF: "BP cuff",
    DeviceRole.THERMOMETER: "thermometer",
}
#: Devices that sleep between readings: silence is their normal state (no device_silent deadman).
_SPOT_CHECK_ROLES: Final = frozenset(p.role for p in PROFILES if p.spot_check)
#: Flags that do not make a spot-check reading doubtful; any other (movement, loose cuff, improper
#: position, test data...) means the reading is no evidence either way: it neither raises nor clears.
_SPOT_BENIGN: Final = frozenset(
    {Quality.FROM_STORAGE, Quality.DEVICE_CLOCK, Quality.DEVICE_CLOCK_UNSET, Quality.IRREGULAR_PULSE}
)
FRESH_MS: Final = 5000  # a strap HR this recent is preferred over the oximeter's pulse rate, and cross-checked
DOUBT_HOLD_MS: Final = 5000  # after a HR/PR disagreement, the oximeter's pulse rate stays doubtful this long
RR_FRESH_MS: Final = 10_000  # RR intervals this recent: the beat definitions of the HR rules decide
# a pulse rate this high, unflagged and held since before the strap's contact, is evidence of heartbeats
# against a strap that has seen no QRS since it was put on: the CinC bradycardia limit, so a pulse that
# is itself extreme bradycardia never counts as evidence
PULSE_EVIDENCE_MIN: Final = 40.0
BEAT_GAP_MS: Final = 65_000  # the longest RR interval a strap reports (16 bits of 1/1024 s)
MINUTE_MS: Final = 60_000
NEWS2_HOLDOFF_MS: Final = 240_000
_NEVER: Final = -(10**15)
_FAR: Final = 10**15


@dataclass(slots=True)
class EngineStats:
    """Counters of what the engine did with its input."""

    messages: int = 0
    samples: int = 0
    late: int = 0  # older than (or as old as) the newest sample already processed for that device/signal
    duplicates: int = 0  # a message with the same seq as the previous one of that device/signal
    flagged: int = 0  # flagged by the device (quality) or without value
    artefacts: int = 0  # rejected by plausibility or the Hampel filter
    doubtful: int = 0  # oximeter pulse rate withheld because it disagreed with the strap's ECG HR
    flaps_merged: int = 0  # re-raised within the flap window: kept as the same alarm

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class _Cond:
    __slots__ = (
        "category",
        "clear_t",
        "clear_text",
        "clear_value",
        "cleared_at",
        "holdoff",
        "inhibitors",
        "news2",
        "priority",
        "releases",
        "rule",
        "shown",
        "t",
        "text",
        "value",
        "want",
    )

    def __init__(self, rule: str) -> None:
        base, dot, suffix = rule.partition(".")
        category, priority, inhibitors, releases = RULES[base]
        self.rule = rule
        self.category = category
        self.priority = priority
        self.inhibitors = tuple(name + dot + suffix for name in inhibitors)
        self.releases = None if releases is None else releases + dot + suffix
        # a partial NEWS2 lags by minutes: it stays held back for a while after a threshold alarm cleared
        self.holdoff = NEWS2_HOLDOFF_MS if base == "news2_urgent" else 0
        self.cleared_at = _NEVER
        self.shown = False  # the manager has been told it is active
        self.want = False  # the rule's own condition
        self.clear_t = -1  # pending clear (flap window) since
        self.clear_value: float | None = None
        self.clear_text = ""
        self.t = 0
        self.value: float | None = None
        self.text = ""
        self.news2: News2 | None = None


class _Stream:
    __slots__ = ("filter", "hi", "kind", "last_seq", "last_t", "lo")

    def __init__(self, signal: Signal) -> None:
        self.kind = _KIND.get(signal, _OTHER)
        self.last_t = _NEVER
        self.last_seq = -1
        self.lo, self.hi = PLAUSIBLE.get(signal, (0.0, 1e9))
        floor = HAMPEL_FLOOR.get(signal, 4.0)
        self.filter = OnsetFilter(Hampel(7, 3.0, floor), floor, CONFIRM_SAMPLES.get(signal, 1))


class _Device:
    __slots__ = (
        "gateway",
        "id",
        "last_data",
        "off_since",
        "poor_since",
        "reason",
        "role",
        "rule_batt_crit",
        "rule_batt_low",
        "rule_off",
        "rule_poor",
        "rule_silent",
        "silent",
        "streams",
    )

    def __init__(self, device: str, gateway: str, role: DeviceRole | None, t: int) -> None:
        self.id = device
        self.gateway = gateway
        self.last_data = t
        self.off_since = -1
        self.poor_since = -1
        self.reason: str | None = None
        self.silent = False
        self.streams: dict[Signal, _Stream] = {}
        self.role: DeviceRole | None = None
        self.set_role(role)

    def set_role(self, role: DeviceRole | None) -> None:
        self.role = role
        suffix = "." + (role.value if role is not None else "device")
        self.rule_off = "sensor_off" + suffix
        self.rule_poor = "poor_signal" + suffix
        self.rule_silent = "device_silent" + suffix
        self.rule_batt_low = "battery_low" + suffix
        self.rule_batt_crit = "battery_critical" + suffix

    @property
    def label(self) -> str:
        return _ROLE_TEXT.get(self.role, "device") if self.role is not None else "device"


class _Patient:
    __slots__ = (
        "asystole_ms",
        "beat_ms",
        "beats",
        "beats_n",
        "conds",
        "contact_since",
        "devices",
        "doubt_erratic",
        "doubt_since",
        "doubt_until",
        "eval_minute",
        "first_t",
        "flap_ms",
        "gap_until",
        "gateway",
        "hr_high",
        "hr_high_b",
        "hr_low",
        "hr_low_b",
        "hr_low_severe",
        "hr_low_severe_b",
        "hr_t",
        "hr_v",
        "id",
        "manual",
        "n2_hits",
        "n2_misses",
        "news2_score",
        "next_due",
        "off_ms",
        "poor_ms",
        "pr_run_since",
        "pr_t",
        "pr_tol",
        "pr_v",
        "pulse_series",
        "rr_seen",
        "rr_t",
        "silent_ms",
        "spo2_low",
        "spo2_series",
        "spo2_severe",
        "spot",
        "strap_t",
        "th",
        "ward",
    )

    def __init__(self, patient: str, ward: str, th: Thresholds) -> None:
        self.id = patient
        self.ward = ward
        self.gateway = ""
        self.devices: dict[str, _Device] = {}
        self.conds: dict[str, _Cond] = {}
        self.next_due = _FAR
        self.spo2_low = Threshold(below=True)
        self.spo2_severe = Threshold(below=True)
        self.hr_high = Threshold(below=False)
        self.hr_low = Threshold(below=True)
        self.hr_low_severe = Threshold(below=True)
        # the same rules over beats (rate of the last N RR intervals, fed once per beat)
        self.hr_high_b = Threshold(below=False)
        self.hr_low_b = Threshold(below=True)
        self.hr_low_severe_b = Threshold(below=True)
        self.beats: deque[float] = deque(maxlen=1)
        self.beats_n = (0, 0, 0)  # hr_high, hr_low, hr_low_severe beats
        self.rr_t = _NEVER  # newest RR interval (beat) from the strap
        self.rr_seen = False  # the strap sends RR intervals: they time the beats for asystole
        self.beat_ms = _NEVER  # newest beat seen by a strap with contact
        self.contact_since = -1  # strap has had skin contact since (-1: no contact)
        self.asystole_ms = 4000
        self.strap_t = _NEVER  # newest valid report (HR or "no beat") of a strap with skin contact
        self.hr_v = 0.0
        self.hr_t = _NEVER
        self.pr_v = 0.0
        self.pr_t = _NEVER
        self.pr_run_since = -1  # the oximeter's pulse rate has been unflagged and >= PULSE_EVIDENCE_MIN since
        self.doubt_until = _NEVER
        self.doubt_since = -1
        self.doubt_erratic = False  # the pulse rate exceeded the ECG rate during this disagreement
        self.spo2_series = MinuteSeries()
        self.pulse_series = MinuteSeries()
        self.eval_minute = -1
        self.n2_hits = [0, 0]
        self.n2_misses = [0, 0]
        self.spot: dict[int, tuple[int, float]] = {}  # _SBP / _TEMP -> (t, value) of the last valid reading
        self.manual: dict[Param, Observed] = {}  # a nurse's latest observation of each NEWS2 parameter
        self.news2_score: News2Score | None = None  # the latest NEWS2 scored
        self.gap_until = -1
        self.first_t = -1
        self.th = th
        self.flap_ms = self.off_ms = self.poor_ms = self.silent_ms = 0
        self.pr_tol = 0.0
        self.configure(th)

    def configure(self, th: Thresholds) -> None:
        self.th = th
        gap, grace = th.max_gap_s, th.delay_grace_samples
        self.spo2_low.configure(
            th.spo2_low,
            th.spo2_delay_s,
            1,
            th.spo2_reset_margin,
            th.spo2_reset_s,
            gap,
            th.satseconds_budget,
            None,
            grace,
        )
        severe = th.spo2_low - th.spo2_severe_margin
        self.spo2_severe.configure(  # consecutive samples: no grace
            severe, 0.0, th.spo2_severe_samples, th.spo2_reset_margin, th.spo2_reset_s, gap, 0.0, th.spo2_low, 0
        )
        self.hr_high.configure(
            th.hr_high, th.hr_high_delay_s, 1, th.hr_reset_margin, th.hr_reset_s, gap, 0.0, None, grace
        )
        self.hr_low.configure(th.hr_low, th.hr_low_delay_s, 1, th.hr_reset_margin, th.hr_reset_s, gap, 0.0, None, grace)
        self.hr_low_severe.configure(
            th.hr_low_severe, th.hr_low_severe_delay_s, 2, th.hr_reset_margin, th.hr_reset_s, gap, 0.0, th.hr_low, grace
        )
        beats = (th.hr_high_beats, th.hr_low_beats, th.hr_low_severe_beats)
        for rule, limit, reset_from in (
            (self.hr_high_b, th.hr_high, None),
            (self.hr_low_b, th.hr_low, None),
            (self.hr_low_severe_b, th.hr_low_severe, th.hr_low),
        ):
            rule.configure(limit, 0.0, 1, th.hr_reset_margin, th.hr_reset_s, BEAT_GAP_MS / 1000, 0.0, reset_from, 0)
        if beats != self.beats_n:
            self.beats_n = beats
            self.beats = deque(self.beats, maxlen=max(1, *beats))
        self.asystole_ms = round(th.asystole_s * 1000)
        alpha = 1.0 - pow(2.718281828459045, -1.0 / th.trend_baseline_tau_min)
        self.spo2_series.alpha = alpha
        self.pulse_series.alpha = alpha
        self.flap_ms = round(th.flap_window_s * 1000)
        self.off_ms = round(th.sensor_off_s * 1000)
        self.pr_tol = th.hr_pr_tolerance
        self.poor_ms = round(th.poor_signal_s * 1000)
        self.silent_ms = round(th.device_silent_s * 1000)


class _Gateway:
    __slots__ = ("id", "offline_since", "online", "online_since", "patients", "waiting", "ward")

    def __init__(self, gateway: str, ward: str) -> None:
        self.id = gateway
        self.ward = ward
        self.online = True
        self.online_since = _NEVER
        self.offline_since = -1  # >= 0 while offline: gateway_offline is raised once the delay has passed
        self.patients: set[str] = set()
        self.waiting: frozenset[str] | None = None  # devices it reports waiting for a slot (None: no status yet)
