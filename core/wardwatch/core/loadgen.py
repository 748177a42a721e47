"""A load generator for benchmarks that can tell whether it offered the load it was asked for.

Simulated patients (a heart-rate strap and a pulse oximeter each, 1 Hz per signal) are published
by worker *processes* of their own (never the process that measures the system under test), each
owning a fixed share of the patients, on its own paho connection (QoS 1, unbounded queue, 65,535
in flight). Samples are stamped with their *scheduled* time, so a worker that falls behind shows as
old samples, and every worker reports how late it published against its schedule.

:func:`run_load` returns a :class:`LoadReport`: offered vs achieved rate, broker acknowledgements,
publish failures, lateness, and per patient the publish time of every low SpO2 sample (for latency).
:attr:`LoadReport.problems` says why the load was *not* offered as planned; a benchmark must then
refuse to report latencies (:meth:`LoadReport.summary` puts the reasons in its JSON).

Optionally some gateways replay a backlog (``replay_gateways`` × ``replay_s`` seconds of past
samples, ``replay_batch`` samples per message) as fast as the broker takes it, while the live
patients stream: each backlog holds a desaturation that ended minutes ago, which must not page.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from wardwatch.core.schema import SCHEMA_VERSION, Sample, Signal, Vitals, encode
from wardwatch.core.topics import vitals_topic

__all__ = ["LoadPlan", "LoadReport", "WorkerReport", "patient_id", "run_load"]

SLICES_PER_S: Final = 50  # each second's messages are spread over 50 slices of 20 ms
NORMAL_SPO2: Final = 97.0
LOW_SPO2: Final = 85.0
MAX_LOW_SAMPLES: Final = 12  # low samples per patient whose publish time is kept (enough to confirm a step)
MAX_P99_LATENESS_MS: Final = 250.0  # publishing later than this against the schedule: load not offered
MIN_ACHIEVED_RATIO: Final = 0.97
PATIENTS_PER_GATEWAY: Final = 100


def patient_id(i: int) -> str:
    """The id of live patient ``i``."""
    return f"p-{i:05d}"


def _gateway(i: int) -> str:
    return f"gw-{i // PATIENTS_PER_GATEWAY:03d}"


@dataclass(frozen=True)
class LoadPlan:
    """What to offer: ``patients`` × 2 signals at 1 Hz for ``duration_s`` seconds to the broker at ``host:port``.

    ``onset_s[i]`` (optional, one per patient): from that second on, patient ``i``'s SpO2 is low.
    ``replay_at_s``: when the replaying gateways (``replay_gateways``, one patient each) send their backlogs.
    """

    host: str
    port: int
    ward: str
    patients: int
    duration_s: float
    onset_s: tuple[float, ...] = ()
    workers: int = 1
    username: str | None = None
    password: str | None = None
    replay_gateways: int = 0
    replay_s: int = 600
    replay_batch: int = 30
    replay_at_s: float = 5.0
    replay_low_from_s: int = 120  # the backlog's desaturation: from this second of the backlog ...
    replay_low_until_s: int = 180  # ... to this one (ended long before the backlog reaches the present)

    @property
    def messages_planned(self) -> int:
        """Live messages the plan offers."""
        return self.patients * 2 * round(self.duration_s)

    @property
    def offered_per_s(self) -> float:
        """The live rate the plan offers (messages/s)."""
        return self.patients * 2.0


@dataclass
class WorkerReport:
    """What one worker process did."""

    worker: int
    planned: int = 0
    published: int = 0
    acknowledged: int = 0
    failed: int = 0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    lateness_ms_p50: float = 0.0
    lateness_ms_p99: float = 0.0
    lateness_ms_max: float = 0.0
    publish_seconds: float = 0.0
    replay_messages: int = 0
    replay_samples: int = 0
    replay_seconds: float = 0.0
    low_samples: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # patient -> [(t ms, publish ns)]


@dataclass
class LoadReport:
    """The workers' reports together, and whether the plan's load was offered."""

    plan: LoadPlan
    workers: list[WorkerReport]
    wall_seconds: float

    @property
    def published(self) -> int:
        """Live messages handed to the broker."""
        return sum(w.published for w in self.workers)

    @property
    def achieved_per_s(self) -> float:
        """Live messages acknowledged by the broker per second of the planned duration."""
        acknowledged = sum(w.acknowledged - w.replay_messages for w in self.workers)
        longest = max((w.publish_seconds for w in self.workers), default=0.0)
        return acknowledged / max(self.plan.duration_s, longest, 1e-9)

    @property
    def low_samples(self) -> dict[str, list[tuple[int, int]]]:
        """Per patient, ``(t, publish time ns)`` of its first low SpO2 samples, in order."""
        merged: dict[str, list[tuple[int, int]]] = {}
        for worker in self.workers:
            merged.update(worker.low_samples)
        return merged

    @property
    def problems(self) -> list[str]:
        """Why the planned load was not offered (empty: it was, and latencies mean something)."""
        out: list[str] = []
        planned = sum(w.planned for w in self.workers)
        if self.published < planned:
            out.append(f"published {self.published} of {planned} planned messages")
        failed = sum(w.failed for w in self.workers)
        if failed:
            reasons = {}
            for w in self.workers:
                reasons.update(w.failure_reasons)
            out.append(f"{failed} publishes failed ({reasons})")
        unacked = sum(w.published + w.replay_messages - w.acknowledged for w in self.workers)
        if unacked > 0:
            out.append(f"{unacked} publishes not acknowledged by the broker")
        if self.achieved_per_s < MIN_ACHIEVED_RATIO * self.plan.offered_per_s:
            out.append(
                f"achieved {self.achieved_per_s:.0f} msg/s of {self.plan.offered_per_s:.0f} offered "
                f"(below {MIN_ACHIEVED_RATIO:.0%})"
            )
        late = max((w.lateness_ms_p99 for w in self.workers), default=0.0)
        if late > MAX_P99_LATENESS_MS:
            out.append(
                f"the publishers fell behind their schedule (p99 {late:.0f} ms late, more than "
                f"{MAX_P99_LATENESS_MS:.0f} ms): the load generator, not the system, set the pace"
            )
        return out

    def summary(self) -> dict[str, Any]:
        """The figures for a benchmark's JSON (``load_offered``: False means do not trust latencies)."""
        workers = self.workers
        out: dict[str, Any] = {
            "load_workers": len(workers),
            "messages_planned": sum(w.planned for w in workers),
            "messages_published": self.published,
            "messages_per_s_offered": round(self.plan.offered_per_s),
            "messages_per_s_achieved": round(self.achieved_per_s),
            "publish_failures": sum(w.failed for w in workers),
            "publisher_lateness_ms_p99": max((w.lateness_ms_p99 for w in workers), default=0.0),
            "publisher_lateness_ms_max": max((w.lateness_ms_max for w in workers), default=0.0),
            "load_offered": not self.problems,
            "load_problems": self.problems,
        }
        if self.plan.replay_gateways:
            seconds = max((w.replay_seconds for w in workers), default=0.0)
            out["replay"] = {
                "gateways": self.plan.replay_gateways,
                "backlog_s": self.plan.replay_s,
                "samples_per_message": self.plan.replay_batch,
                "messages": sum(w.replay_messages for w in workers),
                "samples": sum(w.replay_samples for w in workers),
                "published_in_s": round(seconds, 2),
            }
        return out


def run_load(plan: LoadPlan) -> LoadReport:
    """Offer ``plan`` from ``plan.workers`` processes (blocking; run it in a thread from async code)."""
    workers = max(1, plan.workers)
    start_at = time.time() + 1.0 + 0.5 * workers  # the workers connect first, then all start together
    context = multiprocessing.get_context("spawn")
    began = time.monotonic()
    with context.Pool(workers + (1 if plan.replay_gateways else 0)) as pool:
        replaying = pool.apply_async(_replayer, (plan, start_at)) if plan.replay_gateways else None
        reports = pool.starmap(_worker, [(plan, w, workers, start_at) for w in range(workers)])
        if replaying is not None:
            reports.append(replaying.get())
    return LoadReport(plan, reports, time.monotonic() - began)


# -- one worker process ----------------------------------------------------------------------------


class _Acks:
    def __init__(self) -> None:
        self.count = 0

    def on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self.count += 1


def _connect(plan: LoadPlan, name: str, acks: _Acks) -> paho.Client:
    client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=name, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(65_535)
    client.max_queued_messages_set(0)  # unbounded: never "Message queue full"
    if plan.username is not None:
        client.username_pw_set(plan.username, plan.password)
    client.on_publish = acks.on_publish
    client.connect(plan.host, plan.port, keepalive=60, clean_start=True)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise ConnectionError(f"load worker {name} could not connect to {plan.host}:{plan.port}")
        time.sleep(0.01)
    return client


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _replayer(plan: LoadPlan, start_at: float) -> WorkerReport:
    """A process of its own: at ``replay_at_s``, every replaying gateway's backlog, at full speed."""
    acks = _Acks()
    client = _connect(plan, f"load-replay-{time.time_ns()}", acks)
    report = WorkerReport(worker=-1)
    delay = start_at + plan.replay_at_s - time.time()
    if delay > 0:
        time.sleep(delay)
    now_ms = int(time.time() * 1000)
    first_ms = now_ms - plan.replay_s * 1000
    began = time.monotonic()
    for g in range(plan.replay_gateways):
        gateway, patient = f"gw-r{g:04d}", f"r-{g:05d}"
        for signal, device in ((Signal.HEART_RATE, f"hr-r{g:05d}"), (Signal.SPO2, f"ox-r{g:05d}")):
            topic = vitals_topic(plan.ward, gateway, patient, device, str(signal))
            for seq, first in enumerate(range(0, plan.replay_s, plan.replay_batch), start=1):
                samples = []
                for s in range(first, min(first + plan.replay_batch, plan.replay_s)):
                    value = 72.0
                    if signal is Signal.SPO2:
                        low = plan.replay_low_from_s <= s < plan.replay_low_until_s
                        value = LOW_SPO2 if low else NORMAL_SPO2
                    samples.append(Sample(t=first_ms + s * 1000, v=value))
                payload = encode(
                    Vitals(
                        v=SCHEMA_VERSION,
                        patient=patient,
                        device=device,
                        gateway=gateway,
                        signal=signal,
                        seq=seq,
                        samples=tuple(samples),
                    )
                )
                info = client.publish(topic, payload, qos=1)
                if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    report.failed += 1
                    reason = paho.error_string(info.rc)
                    report.failure_reasons[reason] = report.failure_reasons.get(reason, 0) + 1
                    continue
                report.replay_messages += 1
                report.replay_samples += len(samples)
    report.replay_seconds = time.monotonic() - began
    _wait_for_acks(acks, report.replay_messages)
    report.acknowledged = acks.count
    client.disconnect()
    client.loop_stop()
    return report


def _wait_for_acks(acks: _Acks, total: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while acks.count < total and time.monotonic() < deadline:
        time.sleep(0.02)


def _worker(plan: LoadPlan, worker: int, workers: int, start_at: float) -> WorkerReport:
    """Publish patients ``worker, worker + workers, ...`` on schedule from ``start_at`` (wall clock)."""
    acks = _Acks()
    client = _connect(plan, f"load-{worker}-{time.time_ns()}", acks)
    report = WorkerReport(worker=worker)
    mine = list(range(worker, plan.patients, workers))
    topics = {
        i: (
            vitals_topic(plan.ward, _gateway(i), patient_id(i), f"hr-{i:05d}", str(Signal.HEART_RATE)),
            vitals_topic(plan.ward, _gateway(i), patient_id(i), f"ox-{i:05d}", str(Signal.SPO2)),
        )
        for i in mine
    }
    by_slice: list[list[int]] = [[] for _ in range(SLICES_PER_S)]
    for i in mine:
        by_slice[i % SLICES_PER_S].append(i)
    onset = plan.onset_s
    seconds = round(plan.duration_s)
    report.planned = len(mine) * 2 * seconds
    lateness: list[float] = []
    publish = client.publish
    failures = report.failure_reasons
    ok = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN)
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    began = time.monotonic()
    for second in range(seconds):
        for slice_ in range(SLICES_PER_S):
            offset_ms = second * 1000 + slice_ * (1000 // SLICES_PER_S)
            target = start_at + offset_ms / 1000
            wait = target - time.time()
            if wait > 0:
                time.sleep(wait)
            lateness.append(max(0.0, -wait * 1000))
            t_ms = int(target * 1000)
            elapsed_s = offset_ms / 1000
            for i in by_slice[slice_]:
                hr_topic, ox_topic = topics[i]
                low = bool(onset) and elapsed_s >= onset[i]
                hr = Vitals(
                    v=SCHEMA_VERSION,
                    patient=patient_id(i),
                    device=f"hr-{i:05d}",
                    gateway=_gateway(i),
                    signal=Signal.HEART_RATE,
                    seq=second + 1,
                    samples=(Sample(t=t_ms, v=72.0),),
                )
                ox = Vitals(
                    v=SCHEMA_VERSION,
                    patient=patient_id(i),
                    device=f"ox-{i:05d}",
                    gateway=_gateway(i),
                    signal=Signal.SPO2,
                    seq=second + 1,
                    samples=(Sample(t=t_ms, v=LOW_SPO2 if low else NORMAL_SPO2),),
                )
                for topic, payload in ((hr_topic, encode(hr)), (ox_topic, encode(ox))):
                    rc = publish(topic, payload, qos=1).rc
                    if rc in ok:
                        report.published += 1
                    else:
                        report.failed += 1
                        reason = paho.error_string(rc)
                        failures[reason] = failures.get(reason, 0) + 1
                if low:
                    kept = report.low_samples.setdefault(patient_id(i), [])
                    if len(kept) < MAX_LOW_SAMPLES:
                        kept.append((t_ms, time.time_ns()))
    report.publish_seconds = time.monotonic() - began
    _wait_for_acks(acks, report.published)
    report.acknowledged = acks.count
    client.disconnect()
    client.loop_stop()
    if lateness:
        report.lateness_ms_p50 = round(statistics.median(lateness), 2)
        report.lateness_ms_p99 = round(_percentile(lateness, 0.99), 2)
        report.lateness_ms_max = round(max(lateness), 2)
    return report
