"""The engine's rules on accepted samples: SpO2 / HR thresholds, ECG-PPG cross-check, trends, NEWS2, spot checks.

Also the battery rules and the sensor-off / poor-signal timers that flagged or rejected samples run.
"""

from __future__ import annotations

from wardwatch.alerting.engine._emit import _Emitter
from wardwatch.alerting.engine._rules import MinuteSeries, Threshold
from wardwatch.alerting.engine._state import (
    _SBP,
    _SPOT_BENIGN,
    _SPOT_OTHER,
    _TEMP,
    DOUBT_HOLD_MS,
    MINUTE_MS,
    RR_FRESH_MS,
    _Device,
    _Patient,
)
from wardwatch.alerting.engine.late import LATE_RULES, is_late, late_notice
from wardwatch.alerting.engine.news2 import PARAMS, News2Score, Observed, Param, most_recent, score_news2, to_wire
from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import Quality


class _Rules(_Emitter):
    """The rules a sample reaches once it is accepted (or, for the timers, rejected)."""

    _now_ms: int  # the clock of the latest tick: how late a spot-check reading is (engine/late.py)

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
