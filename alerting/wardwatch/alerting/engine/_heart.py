"""The engine's heart rate: pulse source selection (strap ECG or oximeter), beats and their rate, asystole."""

from __future__ import annotations

import math
from collections import deque
from typing import Final

from wardwatch.alerting.engine._filters import MIN_RR_S
from wardwatch.alerting.engine._rules import Threshold
from wardwatch.alerting.engine._state import BEAT_GAP_MS, FRESH_MS, PULSE_EVIDENCE_MIN, _Device, _Patient
from wardwatch.alerting.engine._vital_rules import _Rules
from wardwatch.alerting.events import ConditionChange

# share of the last N beats that must be beyond the limit: one half, i.e. the median rate of the N beats.
# Measured on the 69 CinC 2015 dev records (arrhythmia profile, brady / tachy score): 0.5 -> 53.8 / 89.1,
# 0.6 -> 53.8 / 65.5, 0.8 -> 25.4 / 24.5, 1.0 (every beat) -> 22.4 / 9.1: the events start at the end of
# the records and a strap's QRS detection misses or adds beats, so a stricter run mostly loses true alarms.
BEAT_FRACTION: Final = 0.5


class _HeartRate(_Rules):
    """Which heart rate counts, the beat definitions of the HR rules, asystole and the strap's contact."""

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
