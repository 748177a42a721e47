"""Property tests: flagged samples cannot influence decisions, and the engine is deterministic."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from wardwatch.alerting.engine import Engine
from wardwatch.alerting.engine._filters import OK, quality_class
from wardwatch.alerting.events import ConditionChange
from wardwatch.core.schema import AlarmCategory, Quality, Sample, Signal, Vitals

T0 = 1_767_225_600_000
DEVICES = {Signal.HEART_RATE: "hrs-1", Signal.SPO2: "plx-1", Signal.PULSE_RATE: "plx-1"}
RANGES = {Signal.HEART_RATE: (20.0, 250.0), Signal.SPO2: (50.0, 100.0), Signal.PULSE_RATE: (20.0, 250.0)}
FLAGS = [q for q in Quality if q not in (Quality.FROM_STORAGE, Quality.DEVICE_CLOCK, Quality.DEVICE_CLOCK_UNSET)]


@dataclass(frozen=True)
class Step:
    signal: Signal
    dt: int  # ms after the previous step
    level: float  # change of the signal's level, as a fraction of its range (a random walk)
    flags: tuple[Quality, ...]


steps = st.lists(
    st.builds(
        Step,
        signal=st.sampled_from(list(DEVICES)),
        dt=st.integers(0, 1200),
        level=st.floats(-0.05, 0.05),
        flags=st.one_of(
            st.just(()),
            st.just(()),
            st.lists(st.sampled_from(FLAGS), min_size=1, max_size=2).map(tuple),
        ),
    ),
    min_size=60,
    max_size=400,
)


def build(plan: list[Step], flagged_value: float | None = None, drift: float = 0.01) -> list[Vitals]:
    """Messages for a plan; ``flagged_value`` (0..1) replaces the value of every flagged sample."""
    out: list[Vitals] = []
    t = T0
    severity = 0.0  # one random walk drives all signals (HR and PR agree), towards deterioration when > 0
    for n, step in enumerate(plan):
        t += step.dt
        lo, hi = RANGES[step.signal]
        severity = min(1.0, max(-0.3, severity + step.level + drift))
        level = 0.9 - 0.5 * severity if step.signal is Signal.SPO2 else 0.25 + 0.4 * severity
        if flagged_value is not None and step.flags:
            level = flagged_value
        value = round(lo + (hi - lo) * level)
        sample = Sample(t=t, v=float(value), q=step.flags)
        out.append(
            Vitals(
                patient="p-1",
                device=DEVICES[step.signal],
                gateway="gw-1",
                signal=step.signal,
                seq=n,
                samples=(sample,),
            )
        )
    return out


drifts = st.floats(-0.01, 0.03)


def replay(messages: list[Vitals]) -> list[ConditionChange]:
    engine = Engine()
    out: list[ConditionChange] = []
    for msg in messages:
        out += engine.tick(msg.samples[0].t)
        out += engine.on_vitals(msg, "ward-a")
    return out + engine.flush()


@settings(max_examples=150, deadline=None)
@given(plan=steps, replacement=st.floats(0.0, 1.0), drift=drifts)
def test_values_of_flagged_samples_never_change_the_output(plan: list[Step], replacement: float, drift: float) -> None:
    assert replay(build(plan, drift=drift)) == replay(build(plan, flagged_value=replacement, drift=drift))


@settings(max_examples=100, deadline=None)
@given(plan=steps, drift=drifts)
def test_only_flagged_input_raises_no_physiological_condition(plan: list[Step], drift: float) -> None:
    flagged = [s if s.flags else Step(s.signal, s.dt, s.level, (Quality.QUESTIONABLE,)) for s in plan]
    changes = replay(build(flagged, drift=drift))
    assert [c for c in changes if c.category is AlarmCategory.PHYSIOLOGICAL] == []


@settings(max_examples=100, deadline=None)
@given(plan=steps, drift=drifts)
def test_deterministic(plan: list[Step], drift: float) -> None:
    messages = build(plan, drift=drift)
    assert replay(messages) == replay(messages)


@settings(max_examples=100, deadline=None)
@given(plan=steps, drift=drifts)
def test_every_clear_follows_its_raise(plan: list[Step], drift: float) -> None:
    shown: dict[str, int] = {}
    for change in replay(build(plan, drift=drift)):
        if change.active:
            assert change.rule not in shown  # deduplicated: never raised twice without a clear
            shown[change.rule] = change.t
        else:
            assert change.t >= shown.pop(change.rule)
    assert quality_class(()) == OK
