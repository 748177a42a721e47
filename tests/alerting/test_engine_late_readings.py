"""Late spot-check readings (engine/late.py): stored on the device while the gateway was away, they never page
as if they were now; beyond a limit they raise a low-priority notice; they still count in NEWS2 as of their time."""

from __future__ import annotations

import itertools

from wardwatch.alerting.engine import RULES, Engine
from wardwatch.alerting.engine.news2 import Param
from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import AlarmCategory, Priority, Quality, Sample, Signal, Vitals

T0 = 1_767_225_600_000
WARD = "ward-a"
MIN = 60_000
LATE_S = 900.0  # the default spot_late_s
_seq = itertools.count(1)
CLOCK = (Quality.DEVICE_CLOCK,)


def vit(signal: Signal, t: int, v: float, device: str = "bpc-1") -> Vitals:
    return Vitals(
        patient="p-1", device=device, gateway="gw-1", signal=signal, seq=next(_seq), samples=(Sample(t, v, CLOCK),)
    )


def sbp(t: int, v: float) -> Vitals:
    return vit(Signal.SYSTOLIC_BP, t, v)


def temp(t: int, v: float) -> Vitals:
    return vit(Signal.BODY_TEMPERATURE, t, v, "thm-1")


def at(engine: Engine, now_ms: int, *messages: Vitals) -> list[ConditionChange]:
    """The messages handled at ``now_ms`` (the service ticks the engine with its wall clock)."""
    out = engine.tick(now_ms)
    for msg in messages:
        out += engine.on_vitals(msg, WARD)
    return out


def active(changes: list[ConditionChange]) -> list[tuple[str, Priority]]:
    return [(c.rule, c.priority) for c in changes if c.active]


def test_the_late_notices_are_low_priority_physiological() -> None:
    assert RuleSet().resolve(WARD, "p-1").spot_late_s == LATE_S
    for rule in ("bp_low_late", "temp_high_late", "temp_low_late"):
        assert RULES[rule][:2] == (AlarmCategory.PHYSIOLOGICAL, Priority.LOW)


def test_a_hypotensive_reading_three_hours_old_is_a_low_notice_not_a_hypotension_alarm() -> None:
    engine = Engine(RuleSet())
    now = T0 + 3 * 60 * MIN
    changes = at(engine, now, sbp(T0, 84.0))
    assert active(changes) == [("bp_low_late", Priority.LOW)]
    (notice,) = changes
    assert notice.text.startswith("late reading: systolic BP 84 mmHg <= 90 mmHg, taken 3 h 00 min ago")
    assert "take a new reading" in notice.text
    assert notice.t == T0  # when it was taken, as every reading


def test_a_reading_within_the_limit_of_lateness_pages_as_now() -> None:
    engine = Engine(RuleSet())
    changes = at(engine, T0 + 10 * MIN, sbp(T0, 84.0))  # a gateway reboot, a short walk out of range
    assert active(changes) == [("bp_low", Priority.MEDIUM)]


def test_a_stored_batch_pages_only_for_its_on_time_newest_reading() -> None:
    """The gateway was away for 2 h: four readings arrive together; only the last, taken 5 min ago, is now."""
    engine = Engine(RuleSet())
    now = T0 + 125 * MIN
    batch = [sbp(T0, 86.0), sbp(T0 + 40 * MIN, 82.0), sbp(T0 + 80 * MIN, 118.0), sbp(T0 + 120 * MIN, 80.0)]
    changes = at(engine, now, *batch)
    assert active(changes) == [("bp_low_late", Priority.LOW), ("bp_low", Priority.MEDIUM)]
    assert [c.rule for c in changes if not c.active] == ["bp_low_late"]  # the normal one in between
    page = next(c for c in changes if c.rule == "bp_low")
    assert page.value == 80.0


def test_a_late_normal_reading_never_clears_an_alarm_raised_on_time() -> None:
    engine = Engine(RuleSet())
    assert active(at(engine, T0 + MIN, sbp(T0, 84.0))) == [("bp_low", Priority.MEDIUM)]
    # the next reading was taken 20 min later but reaches alerting an hour after that
    changes = at(engine, T0 + 80 * MIN, sbp(T0 + 20 * MIN, 120.0))
    assert changes == []
    assert [c.rule for c in engine.active("p-1")] == ["bp_low"]
    # a reading on time decides
    changes = at(engine, T0 + 90 * MIN, sbp(T0 + 89 * MIN, 121.0)) + engine.flush()
    assert [c.rule for c in changes if not c.active] == ["bp_low"]


def test_an_on_time_reading_clears_the_late_notice_and_decides_itself() -> None:
    engine = Engine(RuleSet())
    at(engine, T0 + 60 * MIN, temp(T0, 39.6))
    assert [c.rule for c in engine.active("p-1")] == ["temp_high_late"]
    changes = at(engine, T0 + 61 * MIN, temp(T0 + 60 * MIN, 39.8)) + engine.flush()
    assert active(changes) == [("temp_high", Priority.MEDIUM)]
    assert [c.rule for c in changes if not c.active] == ["temp_high_late"]
    assert "new reading on time" in next(c.text for c in changes if not c.active)


def test_a_late_fever_is_not_cleared_by_its_own_hypothermia_check() -> None:
    engine = Engine(RuleSet())
    at(engine, T0 + 60 * MIN, temp(T0, 39.6))
    assert [c.rule for c in engine.active("p-1")] == ["temp_high_late"]
    at(engine, T0 + 90 * MIN, temp(T0 + 10 * MIN, 34.2))  # late and low: a second notice, the first stays
    assert sorted(c.rule for c in engine.active("p-1")) == ["temp_high_late", "temp_low_late"]


def test_a_late_reading_counts_in_news2_as_of_its_time() -> None:
    engine = Engine(RuleSet({"trend_enabled": False}))
    now = T0 + 60 * MIN
    at(engine, now, sbp(T0, 84.0))
    score = engine.score_now("p-1", now)
    assert score is not None
    assert score.points[Param.SYSTOLIC] == 3
    assert score.used[Param.SYSTOLIC].t == T0


def test_without_a_clock_nothing_is_late() -> None:
    """A replay fed only vitals (no tick): the samples are the only clock."""
    engine = Engine(RuleSet())
    changes = engine.on_vitals(sbp(T0, 84.0), WARD)
    assert active(changes) == [("bp_low", Priority.MEDIUM)]
