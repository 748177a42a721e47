"""Escalation policies in runtime form (milliseconds) and the one rule of who is paged next.

A round of escalation pages step 0 at once, each later step when the previous step's timeout
passes without acknowledgement, and finally the ward's failsafe destination. Re-notification after
an acknowledgement timed out, or after a silence expired with the condition still present, starts
a new round from step 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from wardwatch.alerting.capacity import OPERATOR_RULES
from wardwatch.alerting.settings import WardConfig
from wardwatch.core.schema import Priority


@dataclass(frozen=True, slots=True)
class Step:
    """Page ``destination``; the next step is due ``timeout_ms`` later unless acknowledged."""

    destination: str
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class Policy:
    """Ordered steps of one priority in one ward, then ``failsafe``."""

    steps: tuple[Step, ...]
    failsafe: str
    ack_timeout_ms: int

    def target(self, step: int) -> tuple[str, int | None] | None:
        """Destination of ``step`` and the timeout until the next one (``None``: failsafe, last).

        ``step == len(steps)`` is the failsafe; beyond it there is nothing (``None``).
        """
        if step < len(self.steps):
            return self.steps[step].destination, self.steps[step].timeout_ms
        if step == len(self.steps):
            return self.failsafe, None
        return None


@dataclass(frozen=True, slots=True)
class WardPolicy:
    """Everything the alarm manager needs to know about one ward."""

    ward: str
    policies: dict[Priority, Policy]
    failsafe: str
    reopen_window_ms: int
    max_silence_ms: int
    notify_resolved: bool
    latch_high: bool = True
    operator: Policy | None = None  # for OPERATOR_RULES (equipment alarms of no single patient)
    resolved_recheck_ms: int | None = None  # None: max_silence_ms (see WardConfig.resolved_recheck_s)

    @property
    def recheck_ms(self) -> int:
        """How long after a manual resolve a condition still present opens a new alarm."""
        return self.max_silence_ms if self.resolved_recheck_ms is None else self.resolved_recheck_ms

    def policy(self, priority: Priority, rule: str = "") -> Policy | None:
        """The escalation policy for an alarm of ``priority`` and ``rule``; ``None``: not paged."""
        if self.operator is not None and rule in OPERATOR_RULES:
            return self.operator
        return self.policies.get(priority)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def ward_policy(ward: str, config: WardConfig) -> WardPolicy:
    """Runtime policy of ``ward`` from its validated configuration."""
    policies: dict[Priority, Policy] = {}
    for priority in Priority:
        policy = config.escalation.for_priority(priority)
        if policy is None:
            continue
        policies[priority] = Policy(
            steps=tuple(Step(s.destination, _ms(s.timeout_s)) for s in policy.steps),
            failsafe=config.failsafe,
            ack_timeout_ms=_ms(policy.ack_timeout_s),
        )
    operator = None
    if config.operator is not None:
        timeout_ms = _ms(config.operator_timeout_s)
        operator = Policy(
            steps=(Step(config.operator, timeout_ms),), failsafe=config.failsafe, ack_timeout_ms=timeout_ms
        )
    return WardPolicy(
        ward=ward,
        policies=policies,
        failsafe=config.failsafe,
        reopen_window_ms=round(config.reopen_window_s * 1000),
        max_silence_ms=_ms(config.max_silence_s),
        notify_resolved=config.notify_resolved,
        latch_high=config.latch_high_priority,
        operator=operator,
        resolved_recheck_ms=None if config.resolved_recheck_s is None else _ms(config.resolved_recheck_s),
    )
