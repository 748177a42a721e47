"""The streaming alarm engine: pure decision logic, time passed in, one state object per patient.

Decisions (each tested in ``tests/alerting/test_engine*.py``):

* Order: samples are processed in arrival order. A sample not newer than the newest already
  processed for its device and signal is *late* and dropped (counted in ``stats.late``); a message
  with the same ``seq`` as the previous one of that device/signal is a *duplicate* (QoS 1
  redelivery) and dropped. No reorder buffer: it would delay every alarm by its length, and the
  gateway publishes each stream in order.
* Quality first: a flagged sample (contact lost, questionable, invalid, low perfusion, sensor
  unconnected/displaced/faulty, early estimate, test data) or one without a value never reaches a
  physiological rule; it only runs the sensor-off / poor-signal timers. Unflagged values pass
  limits of what is physically possible (``_filters.PLAUSIBLE``, each limit explained) and an
  onset-aware Hampel filter: a sudden step is held until the next sample(s) confirm it and then
  counts from its first sample; an isolated spike is rejected.
* Pulse source: the strap's ECG HR whenever the strap has skin contact (a valid HR within 5 s,
  including "no beat", HR 0), else the oximeter's pulse rate. The ECG is never withheld: when the
  oximeter's pulse rate disagrees with it, the oximeter is doubtful: its pulse rate (withheld for 5 s
  if it is the source) and its SpO2 (same PPG: motion). A pulse rate persistently *below* the ECG
  (``poor_signal_s``) is a finding, not an artefact: it raises ``pulse_deficit`` (low, informational:
  atrial fibrillation, or PLETH counting half the beats) and the SpO2 counts again, so a pulse
  deficit can never hide a desaturation. A pulse rate that also exceeded the ECG rate is motion:
  SpO2 stays withheld and ``signal_doubtful`` (technical, low) is raised.
* Asystole (high): a strap with contact reports no beat (HR 0, the device convention) and its last
  beat (RR interval, else its last HR > 0) is ``asystole_s`` old. Lost contact raises sensor_off
  (technical) only. ECG fused with the PPG, one way only: a strap that has detected no QRS at all
  since its contact began, while the oximeter has shown a good-quality pulse (unflagged, >=
  ``PULSE_EVIDENCE_MIN``) from before that contact up to now, has not shown it can see this patient's
  ECG: ``strap_no_qrs`` (technical, medium: check the electrodes) instead of asystole, for as long
  as both hold. A strap that has seen a beat since contact began is never overruled by the oximeter,
  and the moment the pulse goes (or is flagged) the asystole is raised.
  Beat definitions (``hr_*_beats``): the rate over the last N RR intervals beyond
  the limit raises the rule; while RR intervals flow they replace the rule's time definition.
* Alarm hygiene: one alarm per patient and rule at a time (dedup); the severe rule of a family
  holds its milder sibling back and clears only when the whole episode has (one episode, one
  alarm); a clear is held for ``flap_window_s`` and cancelled if the condition returns (flap).
* Technical priorities: sensor off medium, poor signal low, doubtful signal low, battery low low /
  critical medium, device silent medium, gateway offline medium (monitoring interrupted for every
  patient behind it, a prompt response but no direct patient harm; it also suppresses the
  device-silent alarms of that gateway's devices), data gap low (awareness; expires).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Final

from wardwatch.alerting.engine._filters import (
    CONFIRM_SAMPLES,
    HAMPEL_FLOOR,
    MIN_RR_S,
    OFF,
    OK,
    PLAUSIBLE,
    TEST,
    Hampel,
    OnsetFilter,
    quality_class,
)
from wardwatch.alerting.engine._rules import MinuteSeries, Threshold
from wardwatch.alerting.engine.capacity import OVER_CAPACITY, OVER_CAPACITY_PRIORITY, capacity_change, reason_text
from wardwatch.alerting.engine.late import LATE_RULES, is_late, late_notice
from wardwatch.alerting.engine.news2 import (
    PARAMS,
    News2Score,
    NurseObservation,
    Observed,
    Param,
    most_recent,
    score_news2,
    to_wire,
)
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet, Thresholds
from wardwatch.core.profiles import PROFILES, SIGNAL_ROLES
from wardwatch.core.schema import (
    AlarmCategory,
    DataGap,
    DeviceRole,
    DeviceStatus,
    GatewayStatus,
    News2,
    Priority,
    Quality,
    Signal,
    Vitals,
)

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
# share of the last N beats that must be beyond the limit: one half, i.e. the median rate of the N beats.
# Measured on the 69 CinC 2015 dev records (arrhythmia profile, brady / tachy score): 0.5 -> 53.8 / 89.1,
# 0.6 -> 53.8 / 65.5, 0.8 -> 25.4 / 24.5, 1.0 (every beat) -> 22.4 / 9.1: the events start at the end of
# the records and a strap's QRS detection misses or adds beats, so a stricter run mostly loses true alarms.
BEAT_FRACTION: Final = 0.5
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


class Engine:
    """Turns vitals, device status, gateway availability and data gaps into :class:`ConditionChange` events.

    Pure: no I/O, no clock; every method takes the time (ms since epoch, UTC) from its input or its
    ``now_ms`` argument, so replaying the same input gives the same output. Call :meth:`tick`
    periodically (e.g. every second) for the time-driven rules.
    """

    def __init__(self, rules: RuleSet | None = None) -> None:
        self._rules = rules if rules is not None else RuleSet()
        self._patients: dict[str, _Patient] = {}
        self._gateways: dict[str, _Gateway] = {}
        self.stats = EngineStats()
        self._now_ms = -1  # the clock of the latest tick: how late a spot-check reading is (engine/late.py)

    # --- configuration -----------------------------------------------------------------------

    @property
    def rules(self) -> RuleSet:
        """The rule set in force."""
        return self._rules

    def set_rules(self, rules: RuleSet) -> None:
        """Apply a new rule set (e.g. after an audited override) to every patient, keeping their state."""
        self._rules = rules
        for st in self._patients.values():
            st.configure(rules.resolve(st.ward, st.id))

    def thresholds(self, ward: str, patient: str) -> Thresholds:
        """The settings in force for ``patient``."""
        return self._rules.resolve(ward, patient)

    # --- input -------------------------------------------------------------------------------

    def on_vitals(self, msg: Vitals, ward: str) -> list[ConditionChange]:
        """Process one vitals message (samples in order; late and duplicate ones are dropped and counted)."""
        out: list[ConditionChange] = []
        stats = self.stats
        stats.messages += 1
        st = self._patients.get(msg.patient)
        if st is None or st.ward != ward:
            st = self._patient(msg.patient, ward)
        if st.gateway != msg.gateway:
            self._bind(st, msg.gateway)
        samples = msg.samples
        if st.first_t < 0:
            st.first_t = samples[0].t
        dev = st.devices.get(msg.device)
        if dev is None:
            dev = st.devices[msg.device] = _Device(
                msg.device, msg.gateway, _ROLE_OF_SIGNAL.get(msg.signal), samples[0].t
            )
        elif dev.role is None and msg.signal in _ROLE_OF_SIGNAL:
            dev.set_role(_ROLE_OF_SIGNAL[msg.signal])
        stream = dev.streams.get(msg.signal)
        if stream is None:
            stream = dev.streams[msg.signal] = _Stream(msg.signal)
        if msg.seq == stream.last_seq:
            stats.duplicates += 1
            return out
        stream.last_seq = msg.seq
        stats.samples += len(samples)
        kind = stream.kind
        lo = stream.lo
        hi = stream.hi
        onset = stream.filter
        last_t = stream.last_t
        for s in samples:
            t = s.t
            if t <= last_t:
                stats.late += 1
                continue
            last_t = t
            v = s.v
            q = s.q
            if kind >= _SBP:
                self._spot_reading(st, kind, t, v, q, out)
                continue
            cls = quality_class(q) if q else OK
            if v is None and cls != TEST:
                cls = OFF
            if cls:
                if onset.pending:
                    self._rejected(st, dev, onset.drop(), out)
                if cls != TEST:
                    stats.flagged += 1
                    if kind == _PR:
                        st.pr_run_since = -1
                    elif cls == OFF and kind in (_HR, _RR):
                        self._strap_off(st, t, out)
                    self._bad(st, dev, t, cls == OFF, out)
                continue
            assert v is not None
            if kind == _BATTERY:
                self._battery(st, dev, t, v, out)
                continue
            if kind == _RR:
                self._beat(st, dev, t, v, out)
                continue
            if kind == _OTHER:
                continue
            if kind == _HR and v == 0.0:  # a strap with contact that saw no beat in its averaging window
                if dev.off_since >= 0 or dev.poor_since >= 0:
                    self._good(st, dev, t, out)
                self._no_beat(st, t, out)
                continue
            if not lo <= v <= hi:
                if kind == _PR:
                    st.pr_run_since = -1
                stats.artefacts += 1
                self._bad(st, dev, t, False, out)
                continue
            accepted, rejected = onset.push(t, v)
            if rejected:
                self._rejected(st, dev, rejected, out)
            for t_ok, v_ok in accepted:
                if dev.off_since >= 0 or dev.poor_since >= 0:
                    self._good(st, dev, t_ok, out)
                if kind == _SPO2:
                    if t_ok < st.doubt_until and (st.doubt_erratic or t_ok - st.doubt_since < st.poor_ms):
                        stats.doubtful += 1  # same PPG as a pulse rate that just contradicted the ECG
                        continue
                    self._spo2(st, t_ok, v_ok, out)
                elif kind == _HR:
                    self._strap_hr(st, t_ok, v_ok, out)
                else:
                    self._oximeter_pr(st, t_ok, v_ok, out)
        stream.last_t = last_t
        if last_t > dev.last_data:
            dev.last_data = last_t
            if dev.silent:
                dev.silent = False
                self._clear(st, dev.rule_silent, last_t, None, f"{dev.label} {dev.id} sending again", out)
        if st.next_due <= last_t:
            self._due(st, last_t, out)
        return out

    def on_device_status(self, msg: DeviceStatus, ward: str) -> list[ConditionChange]:
        """Learn a device's binding, role and link state; battery level feeds the battery rules."""
        out: list[ConditionChange] = []
        st = self._patients.get(msg.patient)
        if st is None or st.ward != ward:
            st = self._patient(msg.patient, ward)
        if st.gateway != msg.gateway:
            self._bind(st, msg.gateway)
        dev = st.devices.get(msg.device)
        if dev is None:
            dev = st.devices[msg.device] = _Device(msg.device, msg.gateway, msg.role, msg.t)
        elif dev.role != msg.role:
            dev.set_role(msg.role)
        dev.gateway = msg.gateway
        dev.reason = None if msg.connected else (msg.reason or "disconnected")
        if msg.battery is not None:
            self._battery(st, dev, msg.t, float(msg.battery), out)
        return out

    def on_gateway_status(self, msg: GatewayStatus) -> list[ConditionChange]:
        """Learn device-to-patient bindings and the devices waiting for a slot from a gateway's status."""
        gw = self._gateway(msg.gateway, msg.ward)
        waiting = frozenset(msg.waiting_for_slot)
        for link in msg.devices:
            st = self._patients.get(link.patient)
            if st is None or st.ward != msg.ward:
                st = self._patient(link.patient, msg.ward)
            if st.gateway != msg.gateway:
                self._bind(st, msg.gateway)
            if link.device not in st.devices:
                st.devices[link.device] = _Device(link.device, msg.gateway, link.role, link.last_seen or msg.t)
            elif gw.waiting and link.device in gw.waiting and link.device not in waiting:  # got a slot: timer restarts
                dev = st.devices[link.device]
                dev.last_data = max(dev.last_data, msg.t)
        gw.ward = msg.ward
        change = capacity_change(gw.waiting, msg)
        gw.waiting = waiting
        return [change] if change is not None else []

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> list[ConditionChange]:
        """A gateway's retained ``online``/``offline`` (last will).

        Offline raises gateway_offline for its patients once it has lasted ``gateway_offline_delay_s``
        (see :meth:`tick`): a broker restart publishes every client's last will, and a Wi-Fi blip
        reconnects within seconds; neither should page every home. Online clears it.
        """
        out: list[ConditionChange] = []
        gw = self._gateway(gateway, ward)
        if gw.online == online:
            return out
        gw.online = online
        if online:
            gw.online_since = t
            gw.offline_since = -1
            for patient in sorted(gw.patients):
                self._clear(self._patients[patient], "gateway_offline", t, None, f"gateway {gateway} back online", out)
        else:
            gw.offline_since = t
            self._gateway_offline_due(gw, t, out)
        return out

    def _gateway_offline_due(self, gw: _Gateway, now_ms: int, out: list[ConditionChange]) -> None:
        for patient in sorted(gw.patients):
            st = self._patients[patient]
            due = gw.offline_since + round(st.th.gateway_offline_delay_s * 1000)
            if now_ms >= due:
                self._raise(st, "gateway_offline", due, None, f"gateway {gw.id} offline: monitoring interrupted", out)

    def on_data_gap(self, msg: DataGap, ward: str) -> list[ConditionChange]:
        """A gateway dropped readings: raise data_gap (low) for the affected patients; it clears after a hold time."""
        out: list[ConditionChange] = []
        gw = self._gateway(msg.gateway, ward)
        patients = [msg.patient] if msg.patient is not None else sorted(gw.patients)
        seconds = max(0, msg.last_t - msg.first_t) / 1000
        for patient in patients:
            st = self._patients.get(patient)
            if st is None or st.ward != ward:
                st = self._patient(patient, ward)
            text = f"gateway {msg.gateway} dropped {msg.dropped} readings over {seconds:.0f} s ({msg.reason})"
            self._raise(st, "data_gap", msg.t, float(msg.dropped), text, out)
            st.gap_until = msg.t + round(st.th.data_gap_hold_s * 1000)
        return out

    def on_observation(
        self, patient: str, ward: str, obs: NurseObservation, now_ms: int | None = None
    ) -> list[ConditionChange]:
        """A nurse's manual observations: kept per parameter and NEWS2 re-scored at once, as of ``now_ms``
        (the service's clock; default: the later of the entry's time and the patient's latest minute).

        A nurse's entry is a confirmed observation: a score meeting a NEWS2 rule raises it without the
        per-minute confirmation that device-only scores need. The entry feeds NEWS2 only (a nurse
        looking at the patient does not need the spot-check rules to page about her own reading).
        """
        out: list[ConditionChange] = []
        st = self._remember(patient, ward, obs)
        if st.th.news2_enabled:
            t = now_ms if now_ms is not None else max(obs.t, st.eval_minute * MINUTE_MS)
            self._news2(st, t, out, confirmed=True)
        return out

    def remember_observation(self, patient: str, ward: str, obs: NurseObservation) -> None:
        """Keep a nurse's observations for the next scoring without running any rule (restart)."""
        self._remember(patient, ward, obs)

    def _remember(self, patient: str, ward: str, obs: NurseObservation) -> _Patient:
        st = self._patient(patient, ward)
        for param, observed in obs.observed().items():
            known = st.manual.get(param)
            if known is None or observed.t >= known.t:
                st.manual[param] = observed
        return st

    def news2(self, patient: str) -> News2Score | None:
        """The patient's latest NEWS2 (full or partial), ``None`` before the first one."""
        st = self._patients.get(patient)
        return None if st is None else st.news2_score

    def score_now(self, patient: str, now_ms: int) -> News2Score | None:
        """The patient's NEWS2 as of ``now_ms`` from what is recent then (no rule is run)."""
        st = self._patients.get(patient)
        return None if st is None else self._score(st, now_ms)

    def tick(self, now_ms: int) -> list[ConditionChange]:
        """Time-driven rules: deadman (device silent), sensor-off/poor-signal timers, data-gap expiry, flap clears."""
        out: list[ConditionChange] = []
        self._now_ms = max(self._now_ms, now_ms)
        gateways = self._gateways
        for gateway in gateways.values():
            if gateway.offline_since >= 0:
                self._gateway_offline_due(gateway, now_ms, out)
        for st in self._patients.values():
            th = st.th
            if st.gap_until >= 0 and now_ms >= st.gap_until:
                self._clear(st, "data_gap", st.gap_until, None, "data gap notice expired", out)
                st.gap_until = -1
            off_ms, poor_ms, silent_ms = st.off_ms, st.poor_ms, st.silent_ms
            for dev in st.devices.values():
                if dev.off_since < 0 and dev.poor_since < 0 and (dev.silent or now_ms - dev.last_data < silent_ms):
                    continue  # the common case: data flowing, nothing pending
                if dev.role in _SPOT_CHECK_ROLES:
                    continue  # asleep between readings
                if dev.off_since >= 0 and now_ms - dev.off_since >= off_ms:
                    self._raise_off(st, dev, dev.off_since + off_ms, out)
                if dev.poor_since >= 0 and now_ms - dev.poor_since >= poor_ms:
                    self._raise_poor(st, dev, dev.poor_since + poor_ms, out)
                if not dev.silent:
                    gw = gateways.get(dev.gateway)
                    if gw is not None and (not gw.online or (gw.waiting and dev.id in gw.waiting)):
                        continue  # gateway_offline / gateway_over_capacity already covers this device
                    ref = dev.last_data if gw is None or gw.online_since < dev.last_data else gw.online_since
                    if now_ms - ref >= silent_ms:
                        dev.silent = True
                        why = f" ({reason_text(dev.reason)})" if dev.reason else ""
                        text = f"{dev.label} {dev.id}: no data for {th.device_silent_s:.0f} s{why}"
                        self._raise(st, dev.rule_silent, ref + silent_ms, None, text, out)
            if st.next_due <= now_ms:
                self._due(st, now_ms, out)
        return out

    def flush(self) -> list[ConditionChange]:
        """Emit every clear still held back by the flap window (end of a replay)."""
        out: list[ConditionChange] = []
        for st in self._patients.values():
            if st.next_due < _FAR:
                self._due(st, _FAR, out)
        return out

    def discharge(self, patient: str, t: int) -> list[ConditionChange]:
        """Forget a patient (discharged or unbound), clearing every condition still shown."""
        out: list[ConditionChange] = []
        st = self._patients.pop(patient, None)
        if st is None:
            return out
        for cond in st.conds.values():
            if cond.shown:
                out.append(
                    ConditionChange(
                        st.id, st.ward, cond.rule, cond.category, cond.priority, False, t, None, "patient discharged"
                    )
                )
        gw = self._gateways.get(st.gateway)
        if gw is not None:
            gw.patients.discard(patient)
        return out

    def active(self, patient: str | None = None) -> list[ConditionChange]:
        """The conditions currently shown as active (as the events that raised them)."""
        found: list[ConditionChange] = []
        states = self._patients.values() if patient is None else [p for p in [self._patients.get(patient)] if p]
        for st in states:
            for c in st.conds.values():
                if c.shown:
                    found.append(
                        ConditionChange(
                            st.id, st.ward, c.rule, c.category, c.priority, True, c.t, c.value, c.text, c.news2
                        )
                    )
        return found

    def patients(self) -> Iterable[str]:
        """Patients with state."""
        return tuple(self._patients)

    def patient_wards(self) -> list[tuple[str, str]]:
        """``(patient, ward)`` of every patient with state."""
        return [(st.id, st.ward) for st in self._patients.values()]

    def spans(self) -> dict[str, tuple[int, int]]:
        """Per patient, the first and the newest sample time seen (for patient-days of monitoring)."""
        out: dict[str, tuple[int, int]] = {}
        for st in self._patients.values():
            last = max((s.last_t for d in st.devices.values() for s in d.streams.values()), default=_NEVER)
            if st.first_t >= 0 and last > _NEVER:
                out[st.id] = (st.first_t, last)
        return out

    # --- state helpers -----------------------------------------------------------------------

    def _patient(self, patient: str, ward: str) -> _Patient:
        st = self._patients.get(patient)
        th = self._rules.resolve(ward, patient)
        if st is None:
            st = self._patients[patient] = _Patient(patient, ward, th)
        else:  # moved ward: the ward's rules apply from now on
            st.ward = ward
            st.configure(th)
        return st

    def _gateway(self, gateway: str, ward: str) -> _Gateway:
        gw = self._gateways.get(gateway)
        if gw is None:
            gw = self._gateways[gateway] = _Gateway(gateway, ward)
        return gw

    def _bind(self, st: _Patient, gateway: str) -> None:
        old = self._gateways.get(st.gateway)
        if old is not None:
            old.patients.discard(st.id)
        self._gateway(gateway, st.ward).patients.add(st.id)
        st.gateway = gateway

    # --- heart rate: source selection, beats, asystole ----------------------------------------

    def _rejected(self, st: _Patient, dev: _Device, held: list[tuple[int, float]], out: list[ConditionChange]) -> None:
        """Samples the onset filter rejected as a spike: artefacts, the poor-signal timer runs."""
        self.stats.artefacts += len(held)
        self._bad(st, dev, held[0][0], False, out)

    def _strap_off(self, st: _Patient, t: int, out: list[ConditionChange]) -> None:
        """The strap lost skin contact: no asystole without contact, and the beat runs start again."""
        st.contact_since = -1
        st.beats.clear()
        self._clear(st, "strap_no_qrs", t, None, "HR strap contact lost (sensor-off alarm follows)", out)

    def _strap_contact(self, st: _Patient, t: int) -> None:
        """A valid report of a strap with contact; after a silence (out of range, restarted) contact starts anew."""
        if st.contact_since < 0 or t - st.strap_t > FRESH_MS:
            st.contact_since = t
            st.beats.clear()
        if t > st.strap_t:  # RR intervals are stamped at their beat, before the notification's HR
            st.strap_t = t

    def _no_beat(self, st: _Patient, t: int, out: list[ConditionChange]) -> None:
        """The strap has contact and saw no beat: asystole once the last beat is ``asystole_s`` old."""
        self._strap_contact(st, t)
        since = st.beat_ms if st.beat_ms > st.contact_since else st.contact_since
        if t - since < st.asystole_ms:
            return
        if st.beat_ms <= st.contact_since and self._pulse_evident(st, t, since):
            text = (
                f"HR strap: no QRS in the {(t - since) / 1000:.0f} s since skin contact began, while the pulse "
                f"oximeter measures a pulse of {st.pr_v:.0f} /min: the strap does not pick up the ECG; check "
                "its electrodes and position (asystole is raised if the pulse goes)"
            )
            self._raise(st, "strap_no_qrs", t, st.pr_v, text, out)
            return
        self._clear(st, "strap_no_qrs", t, None, "no pulse from the oximeter either: asystole raised", out)
        text = f"asystole: no heartbeat for {(t - since) / 1000:.0f} s (HR strap with skin contact)"
        self._raise(st, "asystole", t, 0.0, text, out)

    @staticmethod
    def _pulse_evident(st: _Patient, t: int, since: int) -> bool:
        """The oximeter shows a good-quality pulse now and has since before ``since`` (see the module doc).

        Unflagged by the device (a flag or an implausible value ends the run), at least
        ``PULSE_EVIDENCE_MIN``, no report missing for ``FRESH_MS``. The pulse rate is a mean over
        several seconds, so it lags a cardiac arrest; that is why it only ever overrules a strap that
        has not seen one QRS since its contact began, never a strap whose beats stopped.
        """
        return 0 <= st.pr_run_since <= since and t - st.pr_t <= FRESH_MS

    def _heartbeat(self, st: _Patient, t: int, out: list[ConditionChange]) -> None:
        if t > st.beat_ms:
            st.beat_ms = t
        self._clear(st, "strap_no_qrs", t, None, "HR strap detects heartbeats", out)
        cond = st.conds.get("asystole")
        if cond is not None and cond.want:
            self._clear(st, "asystole", t, None, "heartbeat detected again", out)

    def _beat(self, st: _Patient, dev: _Device, t: int, rr: float, out: list[ConditionChange]) -> None:
        """One RR interval (seconds) ending at ``t``: a beat; feeds the beat definitions of the HR rules."""
        if not MIN_RR_S <= rr <= BEAT_GAP_MS / 1000:
            self.stats.artefacts += 1
            self._bad(st, dev, t, False, out)
            return
        if dev.off_since >= 0 or dev.poor_since >= 0:
            self._good(st, dev, t, out)
        self._strap_contact(st, t)
        st.rr_seen = True
        st.rr_t = t
        if rr * 1000 >= st.asystole_ms:
            # a pause the 1 Hz "no beat" report cannot show: a strap reports HR 0 only at the end of a
            # second with no beat for asystole_s, so a pause of 4.0-5 s that ends within that second
            # arrives only as this RR interval (an RR never spans a loss of contact). Measured on the
            # VitalDB annotations (scripts/vitaldb_beat_rules.py): 2 of 47 pauses > 4 s were missed.
            text = f"asystole: a pause of {rr:.1f} s without a heartbeat (HR strap with skin contact)"
            self._raise(st, "asystole", t, 0.0, text, out)
        self._heartbeat(st, t, out)
        beats = st.beats
        beats.append(rr)
        n_high, n_low, n_severe = st.beats_n
        have = len(beats)
        if n_high and have >= n_high:
            rate = _beat_rate(beats, n_high, below=False)
            rule = st.hr_high_b
            if rate > rule.limit or rule.active or rule.since >= 0:
                self._beat_threshold(st, "hr_high", rule, st.hr_high, t, rate, n_high, out)
        if n_low and have >= n_low:
            rate = _beat_rate(beats, n_low, below=True)
            rule = st.hr_low_b
            if rate < rule.limit or rule.active or rule.since >= 0:
                self._beat_threshold(st, "hr_low", rule, st.hr_low, t, rate, n_low, out)
        if n_severe and have >= n_severe:
            rate = _beat_rate(beats, n_severe, below=True)
            rule = st.hr_low_severe_b
            if rate < rule.limit or rule.active or rule.since >= 0:
                self._beat_threshold(st, "hr_low_severe", rule, st.hr_low_severe, t, rate, n_severe, out)

    def _beat_threshold(
        self,
        st: _Patient,
        name: str,
        rule: Threshold,
        timed: Threshold,
        t: int,
        rate: float,
        n: int,
        out: list[ConditionChange],
    ) -> None:
        r = rule.update(t, rate)
        if r > 0:
            side = "below" if rule.below else "above"
            text = f"HR {rate:.0f} /min {side} {rule.limit:.0f} /min over {n} beats"
            self._raise(st, name, t, rate, text, out)
        elif r < 0 and not timed.active:
            back = "at or above" if rule.below else "at or below"
            self._clear(st, name, t, rate, f"HR {rate:.0f} /min over {n} beats, back {back} {rule.reset:.0f} /min", out)

    def _strap_hr(self, st: _Patient, t: int, v: float, out: list[ConditionChange]) -> None:
        """An accepted ECG heart rate: the pulse source whenever the strap has contact, never withheld."""
        self._strap_contact(st, t)
        st.hr_v = v
        st.hr_t = t
        if not st.rr_seen:  # a strap without RR intervals: its HR > 0 is the evidence of recent beats
            self._heartbeat(st, t, out)
        if t - st.pr_t <= FRESH_MS:
            self._compare(st, t, v, st.pr_v, out)
        self._pulse(st, t, v, out)

    def _oximeter_pr(self, st: _Patient, t: int, v: float, out: list[ConditionChange]) -> None:
        """An accepted PPG pulse rate: cross-checked against the ECG; the pulse source only without a strap."""
        if v < PULSE_EVIDENCE_MIN:
            st.pr_run_since = -1
        elif st.pr_run_since < 0 or t - st.pr_t > FRESH_MS:
            st.pr_run_since = t
        st.pr_v = v
        st.pr_t = t
        if t - st.hr_t <= FRESH_MS:
            self._compare(st, t, st.hr_v, v, out)
        if t - st.strap_t <= FRESH_MS:
            return  # the strap's ECG (with contact) is the heart rate
        if t < st.doubt_until:
            self.stats.doubtful += 1
            return
        self._pulse(st, t, v, out)

    def _compare(self, st: _Patient, t: int, hr: float, pr: float, out: list[ConditionChange]) -> None:
        diff = hr - pr if hr >= pr else pr - hr
        if st.doubt_since >= 0 or (diff > st.pr_tol and diff > 0.15 * (hr if hr >= pr else pr)):
            self._cross_check(st, t, hr, pr, out)

    # --- rules ---------------------------------------------------------------------------------

    def _spo2(self, st: _Patient, t: int, v: float, out: list[ConditionChange]) -> None:
        rule = st.spo2_low
        if v < rule.limit or rule.active or rule.since >= 0:
            self._threshold(st, "spo2_low", rule, t, v, "SpO2", "%", out)
        rule = st.spo2_severe
        if v < rule.limit or rule.active or rule.since >= 0:
            self._threshold(st, "spo2_low_severe", rule, t, v, "SpO2", "%", out)
        self._per_minute(st, st.spo2_series, t, v, out)

    def _pulse(self, st: _Patient, t: int, v: float, out: list[ConditionChange]) -> None:
        # an idle rule only needs samples beyond its limit (measured: the inline test costs ~0.06 µs, the
        # call it avoids ~0.16 µs per rule and sample)
        # a rule with a beat definition leaves the decision to the beats while RR intervals flow: its time
        # definition raises nothing then (a pending delay is dropped); one raised before may still clear
        beats_flow = t - st.rr_t <= RR_FRESH_MS
        n_high, n_low, n_severe = st.beats_n
        rule = st.hr_high
        if n_high and beats_flow and not rule.active:
            rule.since = -1
        elif v > rule.limit or rule.active or rule.since >= 0:
            self._threshold(st, "hr_high", rule, t, v, "HR", "/min", out, st.hr_high_b)
        rule = st.hr_low
        if n_low and beats_flow and not rule.active:
            rule.since = -1
        elif v < rule.limit or rule.active or rule.since >= 0:
            self._threshold(st, "hr_low", rule, t, v, "HR", "/min", out, st.hr_low_b)
        rule = st.hr_low_severe
        if n_severe and beats_flow and not rule.active:
            rule.since = -1
        elif v < rule.limit or rule.active or rule.since >= 0:
            self._threshold(st, "hr_low_severe", rule, t, v, "HR", "/min", out, st.hr_low_severe_b)
        self._per_minute(st, st.pulse_series, t, v, out)

    def _per_minute(self, st: _Patient, ser: MinuteSeries, t: int, v: float, out: list[ConditionChange]) -> None:
        """Collect ``v`` into its minute of ``ser``; a new minute closes the last one (NEWS2, trend)."""
        m = t // MINUTE_MS
        if m != ser.minute:
            if ser.minute >= 0:
                ser.close(st.th.trend_window_min)
            ser.minute = m
            self._minute(st, m, t, out)
        ser.values.append(v)

    def _threshold(
        self,
        st: _Patient,
        name: str,
        rule: Threshold,
        t: int,
        v: float,
        what: str,
        unit: str,
        out: list[ConditionChange],
        beats: Threshold | None = None,
    ) -> None:
        r = rule.update(t, v)
        if not r:
            return
        side = "below" if rule.below else "above"
        if r < 0:
            if beats is not None and beats.active:
                return  # still met over beats

            back = "at or above" if rule.below else "at or below"
            self._clear(st, name, t, v, f"{what} {v:.0f} {unit} back {back} {rule.reset:.0f} {unit}", out)
        elif rule.by_area:
            text = (
                f"{what} {v:.0f} {unit} {side} {rule.limit:.0f} {unit}: "
                f"SatSeconds {rule.area:.0f} over budget {rule.budget:.0f}"
            )
            self._raise(st, name, t, v, text, out)
        elif rule.delay == 0:
            self._raise(
                st, name, t, v, f"{what} {v:.0f} {unit} {side} {rule.limit:.0f} {unit} (deep drop, no delay)", out
            )
        else:
            text = f"{what} {v:.0f} {unit} {side} {rule.limit:.0f} {unit} for {(t - rule.since) / 1000:.0f} s"
            self._raise(st, name, t, v, text, out)

    def _cross_check(self, st: _Patient, t: int, hr: float, pr: float, out: list[ConditionChange]) -> None:
        """ECG HR against PPG pulse rate: a gap makes the oximeter doubtful; held, it is a finding.

        A pulse deficit (beats too weak to reach the finger: atrial fibrillation; or PLETH counting half
        the beats) only ever shows a pulse rate *below* the heart rate. A stretch in which the pulse rate
        also exceeded the ECG rate is the PPG counting motion: it stays an artefact (SpO2 withheld) and,
        held for ``poor_signal_s``, raises signal_doubtful (technical, low) instead.
        """
        diff = hr - pr if hr >= pr else pr - hr
        tol = st.pr_tol
        rel = 0.15 * (hr if hr >= pr else pr)
        if diff > (tol if tol >= rel else rel):
            if t >= st.doubt_until or st.doubt_since < 0:
                st.doubt_since = t
                st.doubt_erratic = False
            if pr > hr:
                st.doubt_erratic = True
            st.doubt_until = t + DOUBT_HOLD_MS
            if t - st.doubt_since >= st.poor_ms:
                if st.doubt_erratic:
                    text = f"ECG HR and oximeter pulse rate disagree ({hr:.0f} vs {pr:.0f} /min): PPG doubtful"
                    self._raise(st, "signal_doubtful", t, diff, text, out)
                else:
                    text = (
                        f"pulse deficit: ECG HR {hr:.0f} /min, oximeter pulse rate {pr:.0f} /min "
                        "(atrial fibrillation, weak pulses, or PLETH counting half the beats)"
                    )
                    self._raise(st, "pulse_deficit", t, diff, text, out)
        elif st.doubt_since >= 0 and t >= st.doubt_until:
            st.doubt_since = -1
            for rule in ("pulse_deficit", "signal_doubtful"):
                self._clear(st, rule, t, diff, "ECG HR and oximeter pulse rate agree", out)

    def _minute(self, st: _Patient, m: int, t: int, out: list[ConditionChange]) -> None:
        """Once per minute of a patient's data: partial NEWS2 and the trend rules (on closed minutes)."""
        if m == st.eval_minute:
            return
        st.eval_minute = m
        th = st.th
        if th.news2_enabled and (
            st.spo2_series.current(m - 1) is not None or st.pulse_series.current(m - 1) is not None
        ):
            self._news2(st, t, out, confirmed=False)
        if th.trend_enabled:
            window = th.trend_window_min
            for ser, name, sign, limit, unit, what in (
                (st.spo2_series, "spo2_trend", -1.0, th.trend_spo2_drop, "%", "SpO2"),
                (st.pulse_series, "hr_trend", 1.0, th.trend_hr_rise, "/min", "HR"),
            ):
                if ser.baseline_n < th.trend_min_baseline_min:
                    continue
                recent, n = ser.recent_median(m - 1, window)
                if n < (2 * window) // 3:
                    continue
                change = (recent - ser.baseline) * sign
                if change >= limit:
                    ser.frozen = True
                    verb = "below" if sign < 0 else "above"
                    text = (
                        f"{what} {window} min median {recent:.0f} {unit}, "
                        f"{change:.0f} {verb} the patient's baseline {ser.baseline:.0f}"
                    )
                    self._raise(st, name, t, recent, text, out)
                elif change <= limit / 2 and ser.frozen:
                    ser.frozen = False
                    self._clear(st, name, t, recent, f"{what} back near the patient's baseline", out)

    def _score(self, st: _Patient, t: int) -> News2Score:
        """Each parameter from the device or the nurse, whichever is the most recent within its bound."""
        th = st.th
        m = t // MINUTE_MS
        device: dict[Param, Observed | None] = {}
        for param, ser in ((Param.SPO2, st.spo2_series), (Param.PULSE, st.pulse_series)):
            median = ser.current(m - 1)
            device[param] = None if median is None else Observed(median, (ser.last_minute + 1) * MINUTE_MS, "device")
        for param, kind in ((Param.SYSTOLIC, _SBP), (Param.TEMPERATURE, _TEMP)):
            found = st.spot.get(kind)
            device[param] = None if found is None else Observed(found[1], found[0], "device")
        observed = {p: most_recent(device.get(p), st.manual.get(p)) for p in PARAMS}
        spot_ms = round(th.news2_spot_fresh_s * 1000)
        fresh = dict.fromkeys(PARAMS, spot_ms)
        # a device's SpO2 / pulse is a closed minute's median, at most 2 minutes old (MinuteSeries.current)
        for param in (Param.SPO2, Param.PULSE):
            if observed[param] is not None and observed[param] is device[param]:
                fresh[param] = 3 * MINUTE_MS
        return score_news2(observed, t, fresh, th.news2_scale, th.supplemental_o2)

    def _news2(self, st: _Patient, t: int, out: list[ConditionChange], *, confirmed: bool) -> None:
        """Score NEWS2 and run its rules (``confirmed``: a nurse's entry, no per-minute confirmation)."""
        th = st.th
        p = st.news2_score = self._score(st, t)
        parts = []
        for param in PARAMS:
            used = p.used.get(param)
            if used is None:
                continue
            points = p.points[param]
            who = "" if used.source == "device" else " nurse"
            value = used.value
            if param is Param.SPO2:
                parts.append(f"SpO2 {float(value):.0f} %{who} ({points}, scale {th.news2_scale})")
            elif param is Param.O2:
                parts.append(f"{'O2' if value else 'air'}{who} ({points})")
            elif param is Param.PULSE:
                parts.append(f"pulse {float(value):.0f} /min{who} ({points})")
            elif param is Param.SYSTOLIC:
                parts.append(f"systolic BP {float(value):.0f} mmHg{who} ({points})")
            elif param is Param.TEMPERATURE:
                parts.append(f"temperature {float(value):.1f} °C{who} ({points})")
            elif param is Param.RESPIRATION:
                parts.append(f"respiration {float(value):.0f} /min{who} ({points})")
            else:
                parts.append(f"ACVPU {value}{who} ({points})")
        if Param.O2 not in p.used:
            parts.append(f"{'O2' if th.supplemental_o2 else 'air'} ({p.o2}) per profile")
        text = f"{p.label} {p.score}: {', '.join(parts)}; {p.tier}"
        # emergency first: when both are met at once it holds the urgent one back (one episode, one alarm)
        for level, met, name in (
            (1, p.score >= 7, "news2_emergency"),
            (0, p.score >= 5 or p.any_three, "news2_urgent"),
        ):
            if met:
                st.n2_hits[level] += 1
                st.n2_misses[level] = 0
                if confirmed or st.n2_hits[level] >= th.news2_confirm_min:
                    self._raise(st, name, t, float(p.score), text, out, news2=to_wire(p))
            else:
                st.n2_misses[level] += 1
                st.n2_hits[level] = 0
                if st.n2_misses[level] >= th.news2_confirm_min:
                    self._clear(st, name, t, float(p.score), text, out)

    def _spot_reading(
        self, st: _Patient, kind: int, t: int, v: float | None, q: tuple[Quality, ...], out: list[ConditionChange]
    ) -> None:
        """A systolic BP or temperature reading: raise or clear its rules at once (quality-gated).

        A reading without a value, or flagged with anything but :data:`_SPOT_BENIGN` (body movement,
        loose cuff, improper position, test data), is no evidence: it neither raises nor clears.
        """
        if v is None or any(flag not in _SPOT_BENIGN for flag in q):
            self.stats.flagged += 1
            return
        if kind == _SPOT_OTHER:
            return
        st.spot[kind] = (t, v)
        th = st.th
        if kind == _SBP:
            low = v <= th.bp_systolic_low
            text = f"systolic BP {v:.0f} mmHg {'<=' if low else '>'} {th.bp_systolic_low:.0f} mmHg"
            self._spot_rule(st, "bp_low", low, t, v, text, out)
            return
        high, low = v >= th.temp_high, v <= th.temp_low
        self._spot_rule(st, "temp_high", high, t, v, f"temperature {v:.1f} °C (fever >= {th.temp_high:.1f} °C)", out)
        self._spot_rule(st, "temp_low", low, t, v, f"temperature {v:.1f} °C (hypothermia <= {th.temp_low:.1f} °C)", out)

    def _spot_rule(
        self, st: _Patient, rule: str, met: bool, t: int, v: float, text: str, out: list[ConditionChange]
    ) -> None:
        late = LATE_RULES[rule]
        if is_late(t, self._now_ms, st.th.spot_late_s):  # a notice, never the alarm itself (engine/late.py)
            if met or late in st.conds:
                notice = late_notice(rule, met, text, t, self._now_ms)
                self._spot_rule_now(st, notice.rule, notice.met, t, v, notice.text, out)
            return
        if late in st.conds:
            self._clear(st, late, t, v, f"new reading on time: {text}", out)
        self._spot_rule_now(st, rule, met, t, v, text, out)

    def _spot_rule_now(
        self, st: _Patient, rule: str, met: bool, t: int, v: float, text: str, out: list[ConditionChange]
    ) -> None:
        if met:
            self._raise(st, rule, t, v, text, out)
        else:
            self._clear(st, rule, t, v, text, out)

    def _battery(self, st: _Patient, dev: _Device, t: int, level: float, out: list[ConditionChange]) -> None:
        th = st.th
        text = f"{dev.label} {dev.id} battery {level:.0f} %"
        if level <= th.battery_critical:
            self._raise(st, dev.rule_batt_crit, t, level, text, out)
        elif level >= th.battery_low + 5:  # one episode, one alarm: critical stays until the battery is fine
            self._clear(st, dev.rule_batt_crit, t, level, text, out)
        if level <= th.battery_low:
            self._raise(st, dev.rule_batt_low, t, level, text, out)
        elif level >= th.battery_low + 5:
            self._clear(st, dev.rule_batt_low, t, level, text, out)

    def _bad(self, st: _Patient, dev: _Device, t: int, off: bool, out: list[ConditionChange]) -> None:
        """A flagged, absent or rejected sample: run the sensor-off or poor-signal timer."""
        if off:
            if dev.off_since < 0:
                dev.off_since = t
            elif t - dev.off_since >= st.off_ms:
                self._raise_off(st, dev, t, out)
        elif dev.poor_since < 0:
            dev.poor_since = t
        elif t - dev.poor_since >= st.poor_ms:
            self._raise_poor(st, dev, t, out)

    def _good(self, st: _Patient, dev: _Device, t: int, out: list[ConditionChange]) -> None:
        if dev.off_since >= 0:
            dev.off_since = -1
            self._clear(st, dev.rule_off, t, None, f"{dev.label} {dev.id} sensor back on", out)
        if dev.poor_since >= 0:
            dev.poor_since = -1
            self._clear(st, dev.rule_poor, t, None, f"{dev.label} {dev.id} signal good again", out)

    def _raise_off(self, st: _Patient, dev: _Device, t: int, out: list[ConditionChange]) -> None:
        text = f"{dev.label} {dev.id}: sensor off for {st.th.sensor_off_s:.0f} s"
        self._raise(st, dev.rule_off, t, None, text, out)

    def _raise_poor(self, st: _Patient, dev: _Device, t: int, out: list[ConditionChange]) -> None:
        text = f"{dev.label} {dev.id}: poor signal for {st.th.poor_signal_s:.0f} s"
        self._raise(st, dev.rule_poor, t, None, text, out)

    # --- emission: dedup, inhibition, flap suppression --------------------------------------

    def _raise(
        self,
        st: _Patient,
        rule: str,
        t: int,
        value: float | None,
        text: str,
        out: list[ConditionChange],
        *,
        news2: News2 | None = None,
    ) -> None:
        c = st.conds.get(rule)
        if c is None:
            c = st.conds[rule] = _Cond(rule)
        if c.shown:
            c.want = True
            if c.clear_t >= 0:  # re-raised inside the flap window: the same alarm continues
                c.clear_t = -1
                self.stats.flaps_merged += 1
            return
        if not c.want:
            c.want = True
            c.t, c.value, c.text, c.news2 = t, value, text, news2
        conds = st.conds
        for name in c.inhibitors:
            other = conds.get(name)
            if other is not None and (other.shown or t - other.cleared_at < c.holdoff):
                return  # held back; a family member releases it when it clears
        c.shown = True
        out.append(ConditionChange(st.id, st.ward, rule, c.category, c.priority, True, t, value, text, news2))

    def _clear(
        self, st: _Patient, rule: str, t: int, value: float | None, text: str, out: list[ConditionChange]
    ) -> None:
        c = st.conds.get(rule)
        if c is None or not c.want:
            return
        c.want = False
        if not c.shown:
            return
        if t < c.t:  # e.g. backfilled samples older than the silence alarm: a clear never precedes its raise
            t = c.t
        c.clear_t, c.clear_value, c.clear_text = t, value, text
        if st.flap_ms <= 0:
            self._emit_clear(st, c, out)
        elif t + st.flap_ms < st.next_due:
            st.next_due = t + st.flap_ms

    def _emit_clear(self, st: _Patient, c: _Cond, out: list[ConditionChange]) -> None:
        t = c.clear_t
        c.shown = False
        c.clear_t = -1
        c.cleared_at = t
        out.append(
            ConditionChange(st.id, st.ward, c.rule, c.category, c.priority, False, t, c.clear_value, c.clear_text)
        )
        if c.releases is not None:
            lower = st.conds.get(c.releases)
            if lower is not None and lower.want and not lower.shown:
                lower.want = False
                self._raise(st, lower.rule, t, lower.value, lower.text or c.clear_text, out)

    def _due(self, st: _Patient, now: int, out: list[ConditionChange]) -> None:
        flap = st.flap_ms
        nxt = _FAR
        for c in list(st.conds.values()):
            if c.clear_t >= 0:
                if c.clear_t + flap <= now:
                    self._emit_clear(st, c, out)
                elif c.clear_t + flap < nxt:
                    nxt = c.clear_t + flap
        st.next_due = nxt


def _beat_rate(beats: deque[float], n: int, *, below: bool) -> float:
    """The rate (/min) that at least ``BEAT_FRACTION`` of the last ``n`` beats are beyond.

    For a low limit: 60 / the RR interval that that share of the last ``n`` RR intervals reach or exceed;
    for a high limit the mirror (with 0.5: the median rate of the last ``n`` beats). This is "beyond the
    limit over N consecutive beats" made robust to beat detection: a missed QRS (one doubled RR) or an
    extra detection (one RR split in two) neither makes nor breaks a run. Deviation from the CinC wording
    (every one of the N beats): see ``BEAT_FRACTION`` for what the strict reading costs.
    """
    last = sorted(beats[-i] for i in range(1, n + 1))
    k = math.ceil(BEAT_FRACTION * n)
    rr = last[n - k] if below else last[k - 1]
    return 60.0 / rr
