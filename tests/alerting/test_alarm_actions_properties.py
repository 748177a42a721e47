"""Property test: clinicians' actions on alarms, in any order and any alarm state, never fail unexpectedly.

A hypothesis state machine drives the alarm service (manager + real SQLite store, time passed by
hand) with random condition changes, passing time and acknowledge/silence/resolve commands on open,
resolved and unknown alarms. Each command either succeeds and is audited exactly once, or is refused
(not found / not allowed now) and audited not at all; the audit chain stays intact and the store
agrees with the manager.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.manager import AlarmNotFoundError, AlarmRecord, InvalidTransitionError
from wardwatch.alerting.service import AlarmService
from wardwatch.alerting.settings import config_from_mapping
from wardwatch.alerting.store import Store
from wardwatch.core.schema import AlarmCategory, AlarmState, Priority

T0 = 1_700_000_000_000
COMMANDS = ("acknowledge", "silence", "resolve")


class HandClock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = T0

    def now_ms(self) -> int:
        return self.now

    async def sleep_until(self, t_ms: int, wake: object) -> None:  # the timer task never runs here
        raise AssertionError("not used: the test ticks the manager itself")


def _config(database: Path) -> object:
    nurse = {"channels": [{"type": "mqtt"}]}
    return config_from_mapping(
        {
            "database": str(database),
            "wards": {
                "ward-a": {
                    "destinations": {"nurse": nurse, "charge": nurse, "desk": nurse},
                    "escalation": {
                        "high": {
                            "steps": [
                                {"destination": "nurse", "timeout_s": 60},
                                {"destination": "charge", "timeout_s": 60},
                            ],
                            "ack_timeout_s": 120,
                        },
                        "low": {"steps": [{"destination": "nurse", "timeout_s": 300}]},
                    },
                    "failsafe": "desk",
                    "reopen_window_s": 30,
                    "max_silence_s": 3600,
                    "notify_resolved": True,
                }
            },
        }
    )


class AlarmActions(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory(prefix="wardwatch-actions-")
        self.clock = HandClock()
        self.store = Store(Path(self._dir.name) / "alerting.db")
        self.service = AlarmService(_config(self.store.path), self.store, clock=self.clock)  # type: ignore[arg-type]
        self.alarm_ids: list[str] = ["a-00000000000000000000"]  # one that never existed
        self.succeeded = 0

    def teardown(self) -> None:
        self.store.close()
        self._dir.cleanup()

    def _human_entries(self) -> int:
        return sum(1 for e in self.store.audit_entries(limit=1_000_000) if e.action in COMMANDS)

    @initialize(cleared=st.booleans())
    def a_high_alarm(self, cleared: bool) -> None:
        self.condition("p-1", "spo2_low", Priority.HIGH, True)
        if cleared:  # latched: it stays active until someone acknowledges it
            self.condition("p-1", "spo2_low", Priority.HIGH, False)

    @rule(
        patient=st.sampled_from(["p-1", "p-2"]),
        rule_name=st.sampled_from(["spo2_low", "hr_high"]),
        priority=st.sampled_from(list(Priority)),
        active=st.booleans(),
    )
    def condition(self, patient: str, rule_name: str, priority: Priority, active: bool) -> None:
        change = ConditionChange(
            patient=patient,
            ward="ward-a",
            rule=rule_name,
            category=AlarmCategory.PHYSIOLOGICAL,
            priority=priority,
            active=active,
            t=self.clock.now,
            value=85.0,
            text=f"{rule_name} test",
        )
        self.service.on_conditions([change])
        for record in self.service.manager.open_alarms():
            if record.alarm_id not in self.alarm_ids:
                self.alarm_ids.append(record.alarm_id)

    @rule(ms=st.integers(0, 400_000))
    def time_passes(self, ms: int) -> None:
        self.clock.now += ms
        self.service._apply(self.service.manager.tick(self.clock.now))  # what the escalation timer does

    @rule(data=st.data(), command=st.sampled_from(COMMANDS), minutes=st.floats(0.01, 120))
    def clinician(self, data: st.DataObject, command: str, minutes: float) -> None:
        open_ids = [r.alarm_id for r in self.service.manager.open_alarms()]
        prefer_open = bool(open_ids) and data.draw(st.booleans())
        alarm_id = data.draw(st.sampled_from(open_ids if prefer_open else self.alarm_ids))
        before = self._human_entries()
        was_open = self.service.manager.get(alarm_id) is not None
        record: AlarmRecord
        try:
            if command == "acknowledge":
                record = self.service.acknowledge(alarm_id, "ann", "at bedside")
            elif command == "silence":
                record = self.service.silence(alarm_id, "ann", "probe reseated", minutes)
            else:
                record = self.service.resolve(alarm_id, "ann", "handled")
        except (AlarmNotFoundError, InvalidTransitionError):
            assert self._human_entries() == before  # refused: nothing audited
            assert not was_open or command == "silence"
            return
        assert was_open
        self.succeeded += 1
        assert self._human_entries() == before + 1  # audited exactly once
        expected = {
            "acknowledge": {AlarmState.ACKNOWLEDGED, AlarmState.RESOLVED},
            "silence": {AlarmState.SILENCED},
            "resolve": {AlarmState.RESOLVED},
        }[command]
        assert record.state in expected
        assert record.actor == "ann"
        stored = self.store.alarm(alarm_id)
        assert stored is not None
        assert stored.state == record.state

    @invariant()
    def audit_chain_intact_and_store_agrees(self) -> None:
        assert self.store.verify_audit() is None
        assert self._human_entries() == self.succeeded
        keys = [r.dedup_key for r in self.service.manager.open_alarms()]
        assert len(keys) == len(set(keys))
        for record in self.service.manager.open_alarms():
            stored = self.store.alarm(record.alarm_id)
            assert stored is not None
            assert stored.state == record.state


AlarmActions.TestCase.settings = settings(max_examples=150, stateful_step_count=20, deadline=None)
TestAlarmActions = AlarmActions.TestCase
