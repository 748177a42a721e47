"""Configuration of the alerting service (TOML, see ``deploy/alerting/alerting.example.toml``).

Wards own destinations (people or roles, each with an ordered list of channels) and an escalation
policy per alarm priority: ordered steps with per-step timeouts and a mandatory failsafe
destination. Durations are seconds (floats) so that tests can use short timeouts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from wardwatch.alerting.proxies import parse_network
from wardwatch.core.config import MqttSettings, Secret, load_config
from wardwatch.core.config import config_from_mapping as core_config_from_mapping
from wardwatch.core.ids import Identifier
from wardwatch.core.schema import Priority

PositiveSeconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeSeconds = Annotated[float, msgspec.Meta(ge=0)]


class _Channel(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="type"):
    """A way of reaching a destination; tried in list order, each retried with backoff."""

    timeout_s: PositiveSeconds = 5.0


class WebhookChannelConfig(_Channel, kw_only=True, tag="webhook"):
    """HTTP POST of the wardwatch page JSON (the ``page`` wire message: docs/wire-format.md)."""

    url: str
    headers: dict[str, Secret] = {}
    ca_file: Path | None = None


class PagerDutyChannelConfig(_Channel, kw_only=True, tag="pagerduty"):
    """HTTP POST of a PagerDuty Events API v2 event (works with any compatible router)."""

    url: str = "https://events.pagerduty.com/v2/enqueue"
    routing_key: Secret
    ca_file: Path | None = None


class SmtpChannelConfig(_Channel, kw_only=True, tag="smtp"):
    """E-mail through an SMTP relay (STARTTLS or implicit TLS optional)."""

    to: Annotated[list[str], msgspec.Meta(min_length=1)]
    host: str = "localhost"
    port: int = 25
    sender: str = "wardwatch@localhost"
    security: Literal["none", "starttls", "tls"] = "none"
    username: str | None = None
    password: Secret | None = None
    ca_file: Path | None = None


class MqttChannelConfig(_Channel, kw_only=True, tag="mqtt"):
    """Publish the page (QoS 1) to ``wardwatch/v1/page/{ward}/{destination}`` for nurse apps."""


ChannelConfig = WebhookChannelConfig | PagerDutyChannelConfig | SmtpChannelConfig | MqttChannelConfig


class DestinationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A person or role; its channels are tried in order (fail-over)."""

    channels: Annotated[list[ChannelConfig], msgspec.Meta(min_length=1)]


class StepConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One escalation step: page ``destination``; escalate if not acknowledged within ``timeout_s``."""

    destination: Identifier
    timeout_s: PositiveSeconds


class PolicyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Escalation for one priority: ordered steps, then the ward's failsafe destination."""

    steps: Annotated[list[StepConfig], msgspec.Meta(min_length=1)]
    ack_timeout_s: PositiveSeconds = 300.0  # re-notify if still active this long after acknowledgement


class EscalationConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Policies per IEC 60601-1-8 priority. ``medium`` defaults to ``high``; no ``low`` means not paged."""

    high: PolicyConfig
    medium: PolicyConfig | None = None
    low: PolicyConfig | None = None

    def for_priority(self, priority: Priority) -> PolicyConfig | None:
        """The policy for ``priority`` (``None``: alarms of that priority are not paged)."""
        if priority is Priority.HIGH:
            return self.high
        if priority is Priority.MEDIUM:
            return self.medium or self.high
        return self.low


class WardConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One ward this instance owns: destinations, escalation and alarm handling."""

    destinations: dict[Identifier, DestinationConfig]
    escalation: EscalationConfig
    failsafe: Identifier  # mandatory: paged after the last step, and when a page cannot be delivered
    # paged for equipment alarms that concern no single patient (gateway over capacity: alerting/capacity.py),
    # then the failsafe after operator_timeout_s; None: those alarms follow the escalation of their priority
    operator: Identifier | None = None
    operator_timeout_s: PositiveSeconds = 900.0
    reopen_window_s: NonNegativeSeconds = 30.0  # a condition that returns within this joins its alarm
    max_silence_s: PositiveSeconds = 3600.0
    # an alarm resolved by hand while its condition is present: if the condition has not cleared this long
    # after, a new alarm opens (a resolve must not silence for longer than a silence could); none: max_silence_s
    resolved_recheck_s: PositiveSeconds | None = None
    notify_resolved: bool = False  # also page "resolved" to the destinations that were paged
    # IEC 60601-1-8 latching: a high-priority alarm whose condition cleared before anyone acknowledged it
    # stays active (and keeps escalating) until acknowledged; acknowledging it then resolves it.
    latch_high_priority: bool = True

    def __post_init__(self) -> None:
        if self.failsafe not in self.destinations:
            raise ValueError(f"failsafe destination {self.failsafe!r} is not one of the ward's destinations")
        if self.operator is not None and self.operator not in self.destinations:
            raise ValueError(f"operator destination {self.operator!r} is not one of the ward's destinations")
        if self.resolved_recheck_s is not None and self.resolved_recheck_s > self.max_silence_s:
            raise ValueError(
                f"resolved_recheck_s ({self.resolved_recheck_s:g}) may be at most max_silence_s "
                f"({self.max_silence_s:g}): a manual resolve must not silence longer than a silence can"
            )
        for priority in Priority:
            policy = self.escalation.for_priority(priority)
            for step in policy.steps if policy else ():
                if step.destination not in self.destinations:
                    raise ValueError(
                        f"escalation.{priority} step destination {step.destination!r} is not defined "
                        f"under destinations (known: {', '.join(sorted(self.destinations))})"
                    )


class PagingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Delivery retries: per channel, then fail over; whole rounds repeat until delivered."""

    attempts_per_channel: Annotated[int, msgspec.Meta(ge=1)] = 3
    backoff_min_s: PositiveSeconds = 0.2
    backoff_max_s: PositiveSeconds = 5.0
    round_backoff_max_s: PositiveSeconds = 60.0
    concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64


class ApiConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The HTTP API. Set ``tls_cert``/``tls_key`` to serve HTTPS (required off loopback)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, lt=65536)] = 8480
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_ttl_s: PositiveSeconds = 900.0  # idle time until automatic logoff
    session_max_s: PositiveSeconds = 12 * 3600.0
    argon2_time_cost: Annotated[int, msgspec.Meta(ge=1)] = 3  # argon2id cost of new password hashes
    argon2_memory_kib: Annotated[int, msgspec.Meta(ge=1024)] = 65_536
    break_glass_s: Annotated[float, msgspec.Meta(gt=0, le=4 * 3600)] = 1800.0  # emergency rights last this long
    # Logins: argon2 runs in a bounded pool off the event loop; per-client and global limits, no lockout.
    login_hash_workers: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    login_hash_executor: Literal["thread", "process"] = "thread"
    login_client_rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=1000)] = 1.0  # after a burst of 10
    login_verify_rate_per_s: Annotated[float, msgspec.Meta(gt=0, le=10_000)] = 0.5  # guessing clients, together
    # peers (addresses or CIDR networks) whose X-Forwarded-For / Forwarded client address is believed: the
    # console's address, so logins are throttled and audited per browser; empty: nobody's (least privilege)
    trusted_proxies: list[str] = []

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("api.tls_cert and api.tls_key go together")
        for entry in self.trusted_proxies:
            parse_network(entry)


class GuardConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What the service does with input it cannot use and with its own failures (see docs/alerting.md)."""

    # a sample stamped further than this ahead of the server's clock, or before earliest_sample_t, is
    # ignored and raises "device clock wrong" (ingest dead-letters the same samples)
    future_margin_s: PositiveSeconds = 300.0
    # ... and so is one merely ahead by more than this: fed to the engine, it would make every real
    # sample after it look late until the clock caught up (no single sample may move "now" forward)
    clock_skew_s: NonNegativeSeconds = 5.0
    # consecutive failed messages of one patient before "monitoring impaired" is raised for them
    failures_before_impaired: Annotated[int, msgspec.Meta(ge=1)] = 3
    # messages handled without failure before the patient's "monitoring impaired" clears
    successes_before_recovered: Annotated[int, msgspec.Meta(ge=1)] = 10
    impaired_priority: Priority = Priority.HIGH  # monitoring of a patient has stopped: as urgent as it gets
    clock_wrong_priority: Priority = Priority.MEDIUM  # like sensor off: that device's data is not used
    thresholds_rejected_priority: Priority = Priority.MEDIUM  # the ward defaults apply meanwhile
    retry_s: PositiveSeconds = 1.0  # retry of alarm state the store could not save
    # live messages waiting longer than this in the intake: "monitoring delayed" (operator) and /healthz degraded
    max_lag_s: PositiveSeconds = 10.0
    delayed_priority: Priority = Priority.MEDIUM  # alarms still come, late: see alerting/intake.py
    # samples already older than this on arrival (a replayed backlog) go to the stale lane: handled after
    # live ones, and a condition that starts and ends within the backlog pages nobody
    stale_after_s: PositiveSeconds = 10.0


class RegistryConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The registry of patients, gateways and kits (docs/registry.md)."""

    # accept a vitals/device message only when its gateway, patient and device were bound at the sample's time
    enforce: bool = True
    # AES-256-GCM key of patient identity (32 raw bytes), outside the database; create it with
    # ``wardwatch alerting registry-key PATH``. None: identity cannot be stored or read (503)
    identity_key_file: Path | None = None
    retention_s: PositiveSeconds = 7 * 86_400.0  # ended bindings stay in kits this long (late samples)
    notice_interval_s: PositiveSeconds = 300.0  # at most one operator notice per gateway this often
    notice_priority: Priority = Priority.MEDIUM  # the operator's technical alarm about refused messages


class AlertingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The whole alerting service configuration."""

    database: Path
    database_sync: Literal["normal", "full"] = "normal"  # "full": fsync every commit (power-loss durable)
    wards: Annotated[dict[Identifier, WardConfig], msgspec.Meta(min_length=1)]
    service_id: Identifier = "alerting-1"
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    paging: PagingConfig = msgspec.field(default_factory=PagingConfig)
    rules: Path | None = None  # the engine's rules file (thresholds, delays); None: built-in defaults
    tick_s: PositiveSeconds = 1.0  # engine tick (deadman, delays); the manager wakes exactly when due
    log_level: str = "INFO"
    # the audit log's anchor outside the database (key: or $WW_ALERTING_AUDIT_KEY, hex); default beside the database
    audit_key_file: Path | None = None  # created with mode 0600 when missing
    audit_head_file: Path | None = None  # the signed head checkpoint, rewritten at every audit append
    guard: GuardConfig = msgspec.field(default_factory=GuardConfig)
    registry: RegistryConfig = msgspec.field(default_factory=RegistryConfig)


def config_from_mapping(data: Mapping[str, Any]) -> AlertingConfig:
    """Validate an already parsed configuration (tests, benchmarks); errors name the key."""
    return core_config_from_mapping(AlertingConfig, data)


def load_alerting_config(path: Path | str | None) -> AlertingConfig:
    """Load and validate the alerting configuration (file plus ``WARDWATCH_*`` overrides)."""
    return load_config(AlertingConfig, path)
