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

from collections.abc import Iterable

from wardwatch.alerting.engine._filters import OFF, OK, TEST, quality_class
from wardwatch.alerting.engine._heart import _HeartRate
from wardwatch.alerting.engine._state import (
    _BATTERY,
    _FAR,
    _HR,
    _NEVER,
    _OTHER,
    _PR,
    _ROLE_OF_SIGNAL,
    _RR,
    _SBP,
    _SPO2,
    _SPOT_CHECK_ROLES,
    MINUTE_MS,
    RULES,
    EngineStats,
    _Device,
    _Gateway,
    _Patient,
    _Stream,
)
from wardwatch.alerting.engine.capacity import capacity_change, reason_text
from wardwatch.alerting.engine.news2 import News2Score, NurseObservation
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet, Thresholds
from wardwatch.core.schema import DataGap, DeviceStatus, GatewayStatus, Vitals

__all__ = ["RULES", "Engine", "EngineStats"]


class Engine(_HeartRate):
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
