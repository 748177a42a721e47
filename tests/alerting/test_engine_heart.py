"""The engine's heart-rate path: ECG first, asystole, onset-aware filtering, beat definitions, profiles."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import msgspec

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.escalation import ward_policy
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import AlarmManager
from wardwatch.alerting.rules import RuleSet
from wardwatch.alerting.settings import WardConfig
from wardwatch.core.schema import AbsentReason, AlarmCategory, AlarmState, Priority, Quality, Sample, Signal, Vitals

T0 = 1_767_225_600_000
WARD = "ward-a"
_seq = itertools.count(1)
STRAP, OXIMETER = "hrs-1", "plx-1"


def vitals(signal: Signal, samples: Sequence[Sample], device: str | None = None) -> Vitals:
    """One vitals message of the strap (HR, RR) or the oximeter (PR, SpO2)."""
    dev = device or (STRAP if signal in (Signal.HEART_RATE, Signal.RR_INTERVAL) else OXIMETER)
    return Vitals(patient="p-1", device=dev, gateway="gw-1", signal=signal, seq=next(_seq), samples=tuple(samples))


def hr(t: int, v: float | None) -> Vitals:
    """A strap HR notification; ``None``: contact lost."""
    if v is None:
        return vitals(Signal.HEART_RATE, [Sample(t, None, (Quality.CONTACT_LOST,), AbsentReason.UNAVAILABLE)])
    return vitals(Signal.HEART_RATE, [Sample(t, float(v))])


def pr(t: int, v: float) -> Vitals:
    """An oximeter pulse-rate notification."""
    return vitals(Signal.PULSE_RATE, [Sample(t, float(v))])


def beats(t: int, rr: Sequence[float]) -> Vitals:
    """RR intervals (s) ending at ``t``, each stamped at its beat, as a gateway publishes them."""
    samples: list[Sample] = []
    end = t
    for interval in reversed(rr):
        samples.append(Sample(end, interval))
        end -= round(interval * 1000)
    return vitals(Signal.RR_INTERVAL, samples[::-1])


def feed(engine: Engine, messages: Iterable[Vitals], tick: bool = True) -> list[ConditionChange]:
    out: list[ConditionChange] = []
    for msg in messages:
        if tick:
            out += engine.tick(msg.samples[0].t)
        out += engine.on_vitals(msg, WARD)
    return out + engine.flush()


def actives(changes: Iterable[ConditionChange], rule: str | None = None) -> list[ConditionChange]:
    return [c for c in changes if c.active and (rule is None or c.rule == rule)]


def quiet() -> dict[str, object]:
    return {"news2_enabled": False, "trend_enabled": False}


def rhythm(start_s: int, seconds: int, rate: float) -> list[Vitals]:
    """A strap at ``rate`` /min with its RR intervals, one notification per second."""
    out: list[Vitals] = []
    rr = 60.0 / rate
    next_beat = start_s + rr
    for i in range(start_s, start_s + seconds):
        t = T0 + (i + 1) * 1000
        out.append(hr(t, round(rate)))
        ends = []
        while next_beat <= i + 1:
            ends.append(next_beat)
            next_beat += rr
        if ends:
            out.append(beats(T0 + round(ends[-1] * 1000), [rr] * len(ends)))
    return out


# --- ECG first ---------------------------------------------------------------------------------


def test_strap_at_160_with_the_oximeter_at_110_pages_tachycardia() -> None:
    msgs: list[Vitals] = []
    for i in range(90):
        t = T0 + i * 1000
        msgs += [hr(t, 70 if i < 10 else 160), pr(t + 10, 70 if i < 10 else 110)]
    changes = feed(Engine(RuleSet(quiet())), msgs)
    (alarm,) = actives(changes, "hr_high")
    # the ECG's step counts from its first sample (+10 s); the default delay is 30 s
    assert alarm.t == T0 + 40_000
    assert alarm.value == 160
    assert (alarm.priority, alarm.category) == (Priority.MEDIUM, AlarmCategory.PHYSIOLOGICAL)
    # the 50 /min gap is shown as a pulse deficit (informational), it silences nothing
    (deficit,) = actives(changes, "pulse_deficit")
    assert deficit.priority is Priority.LOW


# --- asystole ----------------------------------------------------------------------------------


def test_no_beats_with_contact_on_pages_asystole_high_and_latching() -> None:
    msgs = rhythm(0, 20, 75)
    last_beat = max(s.t for m in msgs if m.signal is Signal.RR_INTERVAL for s in m.samples)
    # the device convention: contact on, no beat in its window -> HR 0, no RR intervals
    msgs += [hr(T0 + (i + 1) * 1000, 0) for i in range(20, 40)]
    changes = feed(Engine(RuleSet(quiet())), msgs)
    (asystole,) = actives(changes, "asystole")
    assert (asystole.priority, asystole.category) == (Priority.HIGH, AlarmCategory.PHYSIOLOGICAL)
    assert asystole.t == next(t for t in range(T0, T0 + 60_000, 1000) if t - last_beat >= 4000)
    assert "no heartbeat" in asystole.text
    assert not [c for c in changes if c.category is AlarmCategory.TECHNICAL]
    # latching: a beat clears the condition, but nobody acknowledged it, so the alarm stays active
    changes_after = feed(Engine(RuleSet(quiet())), [*msgs, *rhythm(40, 20, 75)])
    cleared = [c for c in changes_after if c.rule == "asystole" and not c.active]
    assert cleared
    config = {
        "destinations": {"nurse": {"channels": [{"type": "mqtt"}]}, "desk": {"channels": [{"type": "mqtt"}]}},
        "escalation": {"high": {"steps": [{"destination": "nurse", "timeout_s": 60}]}},
        "failsafe": "desk",
    }
    manager = AlarmManager({WARD: ward_policy(WARD, msgspec.convert(config, WardConfig))})
    for change in (c for c in changes_after if c.rule == "asystole"):
        manager.on_condition(change, change.t)
    manager.tick(cleared[0].t + 120_000)
    assert [(r.rule, r.state) for r in manager.open_alarms()] == [("asystole", AlarmState.ACTIVE)]


def test_contact_lost_pages_a_technical_alarm_only() -> None:
    msgs = rhythm(0, 20, 75) + [hr(T0 + (i + 1) * 1000, None) for i in range(20, 80)]
    changes = feed(Engine(RuleSet(quiet())), msgs)
    assert [c.rule for c in actives(changes)] == ["sensor_off.heart_rate_strap"]
    assert actives(changes)[0].category is AlarmCategory.TECHNICAL


def test_asystole_is_timed_from_contact_and_a_strap_without_rr_intervals_uses_its_hr() -> None:
    # a strap that sends no RR intervals: its last HR > 0 is the last evidence of a beat
    msgs = [hr(T0 + i * 1000, 70) for i in range(10)] + [hr(T0 + i * 1000, 0) for i in range(10, 20)]
    (asystole,) = actives(feed(Engine(RuleSet(quiet())), msgs), "asystole")
    assert asystole.t == T0 + 13_000  # last HR > 0 at +9 s, asystole_s 4
    # contact regained after a loss: no asystole before asystole_s of contact without a beat
    msgs = [hr(T0 + i * 1000, None) for i in range(10)] + [hr(T0 + i * 1000, 0) for i in range(10, 13)]
    assert actives(feed(Engine(RuleSet(quiet())), msgs), "asystole") == []


def test_a_strap_back_after_a_silence_is_not_asystole_at_once() -> None:
    # out of range for a minute; back, its first report is "no beat yet": that is no 4 s without a beat
    msgs = rhythm(0, 20, 75) + [hr(T0 + 80_000 + i * 1000, 0) for i in range(3)] + rhythm(83, 10, 75)
    assert actives(feed(Engine(RuleSet(quiet())), msgs, tick=False), "asystole") == []


def test_a_pause_over_asystole_s_that_ends_within_a_report_second_pages_asystole() -> None:
    # beats at 75 /min, then a 4.4 s pause that ends before the strap's 1 Hz "no beat" report could show
    # it (HR 0 needs a whole second with no beat for 4 s): only the RR interval tells
    msgs = rhythm(0, 20, 75)
    last = max(s.t for m in msgs if m.signal is Signal.RR_INTERVAL for s in m.samples)
    msgs += [hr(T0 + 21_000 + i * 1000, 75) for i in range(4)]
    msgs.append(beats(last + 4400, [4.4]))
    changes = feed(Engine(RuleSet(quiet())), sorted(msgs, key=lambda m: m.samples[0].t))
    (asystole,) = actives(changes, "asystole")
    assert asystole.t == last + 4400
    assert asystole.priority is Priority.HIGH
    assert "pause of 4.4 s" in asystole.text
    assert [c.active for c in changes if c.rule == "asystole"] == [True, False]  # the beat ends it; latched
    # a pause under asystole_s is no asystole
    short = [*rhythm(0, 20, 75), beats(last + 3900, [3.9])]
    assert actives(feed(Engine(RuleSet(quiet())), short), "asystole") == []


def _strap_on_without_qrs(contact_at_s: int, until_s: int) -> list[Vitals]:
    """Strap contact lost until ``contact_at_s``, then contact on and no QRS detected (HR 0)."""
    return [hr(T0 + i * 1000, None if i < contact_at_s else 0) for i in range(until_s)]


def test_a_strap_without_a_qrs_since_contact_is_a_technical_alarm_while_the_oximeter_shows_a_pulse() -> None:
    # the strap was put back on but its electrodes pick up no ECG; the oximeter counted 110 /min throughout
    msgs = _strap_on_without_qrs(10, 40) + [pr(T0 + i * 1000 + 10, 110) for i in range(40)]
    changes = feed(Engine(RuleSet(quiet())), sorted(msgs, key=lambda m: m.samples[0].t))
    assert actives(changes, "asystole") == []
    (check,) = actives(changes, "strap_no_qrs")
    assert (check.priority, check.category) == (Priority.MEDIUM, AlarmCategory.TECHNICAL)
    assert check.t == T0 + 14_000  # asystole_s after the contact began
    assert "110 /min" in check.text


def test_the_asystole_follows_at_once_when_the_oximeters_pulse_goes() -> None:
    msgs = _strap_on_without_qrs(10, 40) + [pr(T0 + i * 1000 + 10, 110) for i in range(25)]
    gone = Vitals(
        patient="p-1",
        device=OXIMETER,
        gateway="gw-1",
        signal=Signal.PULSE_RATE,
        seq=0,
        samples=(Sample(T0 + 25_010, 0.0, (Quality.POOR_SIGNAL,)),),
    )
    msgs.append(msgspec.structs.replace(gone, seq=next(_seq)))
    changes = feed(Engine(RuleSet(quiet())), sorted(msgs, key=lambda m: m.samples[0].t))
    (asystole,) = actives(changes, "asystole")
    assert asystole.t == T0 + 26_000  # the strap's next "no beat" after the flagged pulse
    assert [c.active for c in changes if c.rule == "strap_no_qrs"] == [True, False]


def test_an_oximeter_never_overrules_a_strap_whose_beats_stopped() -> None:
    # the strap saw this patient's QRS, then none: asystole, whatever the (lagging) pulse rate says
    msgs = rhythm(0, 20, 75) + [hr(T0 + (i + 1) * 1000, 0) for i in range(20, 40)]
    msgs += [pr(T0 + i * 1000 + 10, 75) for i in range(40)]
    changes = feed(Engine(RuleSet(quiet())), sorted(msgs, key=lambda m: m.samples[0].t))
    assert len(actives(changes, "asystole")) == 1
    assert actives(changes, "strap_no_qrs") == []


def test_a_pulse_that_began_after_the_strap_contact_or_is_slow_is_no_evidence_against_asystole() -> None:
    late = _strap_on_without_qrs(10, 40) + [pr(T0 + i * 1000 + 10, 110) for i in range(12, 40)]
    slow = _strap_on_without_qrs(10, 40) + [pr(T0 + i * 1000 + 10, 35) for i in range(40)]
    for msgs in (late, slow):
        changes = feed(Engine(RuleSet(quiet())), sorted(msgs, key=lambda m: m.samples[0].t))
        assert [c.t for c in actives(changes, "asystole")] == [T0 + 14_000]
        assert actives(changes, "strap_no_qrs") == []


def test_extreme_bradycardia_below_20_is_not_discarded() -> None:
    msgs = [hr(T0 + i * 1000, 60 if i < 5 else 15) for i in range(40)]
    changes = feed(Engine(RuleSet(quiet())), msgs)
    severe = actives(changes, "hr_low_severe")
    assert severe
    assert severe[0].priority is Priority.HIGH
    assert severe[0].value == 15


# --- onset-aware filtering -------------------------------------------------------------------


def test_a_70_to_160_step_is_accepted_within_two_samples() -> None:
    engine = Engine(RuleSet({**quiet(), "hr_high_delay_s": 0}))
    for i in range(10):
        assert engine.on_vitals(hr(T0 + i * 1000, 70), WARD) == []
    assert engine.on_vitals(hr(T0 + 10_000, 160), WARD) == []  # held: a spike or an onset?
    (alarm,) = actives(engine.on_vitals(hr(T0 + 11_000, 160), WARD))  # confirmed by the next sample
    assert (alarm.rule, alarm.t, alarm.value) == ("hr_high", T0 + 10_000, 160)  # counted from the first
    assert engine.stats.artefacts == 0


def test_an_isolated_spike_is_still_rejected() -> None:
    engine = Engine(RuleSet({**quiet(), "hr_high_delay_s": 0}))
    values = [70] * 10 + [160] + [71] * 5 + [40] + [70] * 5
    changes = feed(engine, [hr(T0 + i * 1000, v) for i, v in enumerate(values)], tick=False)
    assert actives(changes) == []
    assert engine.stats.artefacts == 2


def test_a_fast_ramp_is_an_onset_not_a_run_of_spikes() -> None:
    engine = Engine(RuleSet({**quiet(), "hr_high_delay_s": 0}))
    values = [70] * 10 + [100, 130, 160, 160]  # 30 /min per second: each step exceeds the filter's floor
    (alarm,) = actives(feed(engine, [hr(T0 + i * 1000, v) for i, v in enumerate(values)], tick=False))
    assert alarm.t == T0 + 12_000  # the first sample above 130 /min
    assert engine.stats.artefacts == 0


# --- beat definitions and the arrhythmia profile ---------------------------------------------


def arrhythmia() -> RuleSet:
    return RuleSet({**quiet(), "profile": "arrhythmia"})


def test_arrhythmia_profile_pages_brady_below_40_for_5_beats() -> None:
    msgs = rhythm(0, 20, 70)
    # five beats 1.6 s apart (37.5 /min) while the strap's 4 s mean still reads 40-50
    t = 20.0
    for _ in range(5):
        t += 1.6
        msgs.append(hr(T0 + round(t * 1000), 45))
        msgs.append(beats(T0 + round(t * 1000), [1.6]))
    (alarm,) = actives(feed(Engine(arrhythmia()), msgs, tick=False))
    assert (alarm.rule, alarm.priority) == ("hr_low_severe", Priority.HIGH)
    assert alarm.t == T0 + round((20 + 3 * 1.6) * 1000)  # the median of the last 5 RR is slow after 3 slow beats
    assert alarm.text == "HR 38 /min below 40 /min over 5 beats"


def test_one_missed_or_extra_beat_does_not_make_or_break_a_run() -> None:
    # normal rhythm with one missed QRS (a doubled RR): no bradycardia
    msgs = rhythm(0, 20, 70)
    msgs += [hr(T0 + 21700, 35), beats(T0 + 21700, [1.7]), *rhythm(22, 10, 70)]
    assert actives(feed(Engine(arrhythmia()), msgs, tick=False)) == []
    # tachycardia at 160 /min with one missed beat still pages after 17 beats
    msgs = rhythm(0, 10, 70)
    t = 10.0
    for k in range(20):
        rr = 0.75 if k == 5 else 0.375
        t += rr
        msgs.append(beats(T0 + round(t * 1000), [rr]))
    (alarm,) = actives(feed(Engine(arrhythmia()), msgs, tick=False))
    assert alarm.rule == "hr_high"
    assert "over 17 beats" in alarm.text


def test_time_definition_decides_without_rr_intervals() -> None:
    # an oximeter-only patient on the arrhythmia profile: > 140 /min for hr_high_delay_s (5 s)
    msgs = [pr(T0 + i * 1000, 80 if i < 5 else 150) for i in range(20)]
    (alarm,) = actives(feed(Engine(arrhythmia()), msgs))
    assert (alarm.rule, alarm.t) == ("hr_high", T0 + 10_000)


def test_virtual_ward_profile_keeps_its_time_based_rules_when_rr_intervals_flow() -> None:
    msgs = rhythm(0, 10, 70) + rhythm(10, 40, 150)
    (alarm,) = actives(feed(Engine(RuleSet(quiet())), msgs))
    assert alarm.rule == "hr_high"
    assert "for 30 s" in alarm.text


def test_while_rr_intervals_flow_the_beat_definition_decides() -> None:
    # the strap's 1 Hz rate says 150 (its averaging), every beat says 75 /min: the beats decide
    msgs = [m if m.signal is Signal.RR_INTERVAL else hr(m.samples[0].t, 150) for m in rhythm(0, 40, 75)]
    assert actives(feed(Engine(arrhythmia()), msgs)) == []
    # the same rate without RR intervals pages on the time definition
    hr_only = [m for m in msgs if m.signal is Signal.HEART_RATE]
    assert [c.rule for c in actives(feed(Engine(arrhythmia()), hr_only))] == ["hr_high"]
