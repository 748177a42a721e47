"""Prometheus metrics of the alerting service and the alarm-burden report.

Alarm burden (what drives alarm fatigue): pages per patient-day, the fraction of alarms
acknowledged, and time to acknowledge, overall and by rule, from the persisted alarms and outbox.
"""

from __future__ import annotations

import statistics
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from wardwatch.alerting.store import Store


class AlertingMetrics:
    """The service's Prometheus metrics, in their own registry (served at ``GET /metrics``)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.conditions = Counter(
            "wardwatch_alerting_conditions", "Condition changes from the engine", ["rule", "active"], registry=r
        )
        self.alarms_raised = Counter(
            "wardwatch_alerting_alarms_raised",
            "Alarms opened (reason: onset; realarm: a condition that outlasted the hold after a manual resolve)",
            ["rule", "priority", "reason"],
            registry=r,
        )
        self.watches_dropped = Counter(
            "wardwatch_alerting_watches_dropped",
            "Manual resolves whose watch ended without a re-alarm (reason: cleared, discharged, not_rereported)",
            ["reason"],
            registry=r,
        )
        self.open_alarms = Gauge("wardwatch_alerting_open_alarms", "Alarms not yet resolved", registry=r)
        self.pages_delivered = Counter(
            "wardwatch_alerting_pages_delivered", "Pages delivered", ["channel", "priority"], registry=r
        )
        self.page_failures = Counter(
            "wardwatch_alerting_page_failures", "Channels that failed a page (after retries)", ["channel"], registry=r
        )
        self.page_delivery_seconds = Histogram(
            "wardwatch_alerting_page_delivery_seconds",
            "From page creation to delivery",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.clinician_actions = Counter(
            "wardwatch_alerting_clinician_actions", "Acknowledge/silence/resolve by people", ["action"], registry=r
        )
        self.messages = Counter("wardwatch_alerting_messages", "MQTT messages consumed", ["kind"], registry=r)
        self.rejected = Counter("wardwatch_alerting_rejected", "MQTT messages rejected", ["reason"], registry=r)
        self.api_requests = Counter(
            "wardwatch_alerting_api_requests", "API requests", ["method", "route", "status"], registry=r
        )
        self.failures = Counter(
            "wardwatch_alerting_failures",
            "Exceptions contained instead of stopping the service (stage: engine, tick, manager, store, rules)",
            ["stage"],
            registry=r,
        )
        self.patients_impaired = Gauge(
            "wardwatch_alerting_patients_impaired",
            "Patients whose input keeps failing (a 'monitoring impaired' alarm is raised for each)",
            registry=r,
        )
        self.samples_ignored = Counter(
            "wardwatch_alerting_samples_ignored",
            "Samples not fed to the engine: time stamp before 2020 ('epoch'), ahead of the clock ('ahead', 'future')",
            ["reason"],
            registry=r,
        )
        self.thresholds_rejected = Counter(
            "wardwatch_alerting_thresholds_rejected",
            "Stored per-patient overrides that no longer validate (ward defaults used instead)",
            registry=r,
        )
        self.provenance_refused = Counter(
            "wardwatch_alerting_provenance_refused",
            "Vitals/device messages (or samples) refused by the registry's provenance check, by reason",
            ["reason"],
            registry=r,
        )
        self.intake_lag = Gauge(
            "wardwatch_alerting_intake_lag_seconds",
            "Longest a live message waited in the intake over the last second (past guard.max_lag_s: delayed)",
            registry=r,
        )
        self.sample_age = Gauge(
            "wardwatch_alerting_sample_age_seconds",
            "Age of the youngest live sample handled over the last second (processing time - sample time)",
            registry=r,
        )
        self.intake_backlog = Gauge(
            "wardwatch_alerting_intake_backlog", "Messages waiting in the intake", ["lane"], registry=r
        )
        self.stale_messages = Counter(
            "wardwatch_alerting_stale_messages",
            "Vitals messages already stale on arrival (replayed backlogs)",
            registry=r,
        )
        self.stale_conditions_dropped = Counter(
            "wardwatch_alerting_stale_conditions_dropped",
            "Conditions that started and ended within a replayed backlog (paged nobody)",
            registry=r,
        )
        self.healthy = Gauge("wardwatch_alerting_healthy", "1 while GET /healthz reports ok, else 0", registry=r)
        self.healthy.set(1)


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "mean": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {"median": statistics.median(ordered), "p90": p90, "mean": statistics.fmean(ordered)}


def burden(store: Store, since: int, until: int, ward: str | None = None) -> dict[str, Any]:
    """Alarm-burden report for alarms started in ``[since, until)`` (ms), overall and by rule."""
    alarms = [a for a in store.alarms_since(since) if a.started < until and (ward is None or a.ward == ward)]
    by_id = {a.alarm_id: a for a in alarms}
    delivered: dict[str, int] = {}
    for alarm_id, status, created, _destination in store.pages_since(since):
        if status == "delivered" and created < until and alarm_id in by_id:
            delivered[alarm_id] = delivered.get(alarm_id, 0) + 1
    patient_days = store.patient_days(since, ward)

    def block(selected: list[Any]) -> dict[str, Any]:
        pages = sum(delivered.get(a.alarm_id, 0) for a in selected)
        acked = [a for a in selected if a.first_ack_at is not None]
        tta = [(a.first_ack_at - a.started) / 1000 for a in acked]
        return {
            "alarms": len(selected),
            "pages": pages,
            "pages_per_patient_day": pages / patient_days if patient_days else None,
            "alarms_per_patient_day": len(selected) / patient_days if patient_days else None,
            "acknowledged_fraction": len(acked) / len(selected) if selected else None,
            "time_to_acknowledge_s": _summary(tta),
            "flaps": sum(a.flaps for a in selected),
        }

    rules = sorted({a.rule for a in alarms})
    return {
        "since": since,
        "until": until,
        "ward": ward,
        "patient_days": patient_days,
        "total": block(alarms),
        "by_rule": {rule: block([a for a in alarms if a.rule == rule]) for rule in rules},
    }
