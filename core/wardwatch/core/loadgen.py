"""A load generator for benchmarks that can tell whether it offered the load it was asked for.

Simulated patients (a heart-rate strap and a pulse oximeter each, 1 Hz per signal) are published
by worker *processes* of their own (never the process that measures the system under test), each
owning a fixed share of the patients, on its own connection (QoS 1; pre-framed packets written in
bulk by :class:`RawPublisher`, because paho's per-publish cost made the generator the bottleneck).
Samples are stamped with their *scheduled* time, so a worker that falls behind shows as old samples,
and every worker reports how late it published against its schedule.

:func:`run_load` returns a :class:`LoadReport`: offered vs achieved rate, broker acknowledgements,
publish failures, lateness, and per patient the publish time of every low SpO2 sample (for latency).
:attr:`LoadReport.problems` says why the load was *not* offered as planned; a benchmark must then
refuse to report latencies (:meth:`LoadReport.summary` puts the reasons in its JSON).

Optionally some gateways replay a backlog (``replay_gateways`` × ``replay_s`` seconds of past
samples, ``replay_batch`` samples per message) as fast as the broker takes it, while the live
patients stream: each backlog holds a desaturation that ended minutes ago, which must not page.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import statistics
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from wardwatch.core.schema import Sample, Signal, Vitals, encode
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


def replay_patient_id(g: int) -> str:
    """The patient whose backlog replay gateway ``g`` sends (an id of the registry's issued form)."""
    return f"p-r{g:05d}"


def replay_gateway(g: int) -> str:
    """Replay gateway ``g`` (one patient each, a strap ``hr-r{g}`` and an oximeter ``ox-r{g}``)."""
    return f"gw-r{g:04d}"


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
    samples_per_message: int = 1  # > 1: every k seconds one message per signal with the last k samples
    username: str | None = None
    password: str | None = None
    replay_gateways: int = 0
    replay_s: int = 600
    replay_batch: int = 30
    replay_at_s: float = 5.0
    replay_low_from_s: int = 120  # the backlog's desaturation: from this second of the backlog ...
    replay_low_until_s: int = 180  # ... to this one (ended long before the backlog reaches the present)

    @property
    def offered_per_s(self) -> float:
        """The live rate the plan offers (messages/s)."""
        return self.patients * 2.0 / max(1, self.samples_per_message)


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
            "load_workers": sum(1 for w in workers if w.worker >= 0),
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


class RawPublisher:
    """The cheapest QoS 1 publisher: pre-framed MQTT 3.1.1 PUBLISH packets written in bulk on a plain socket.

    Measured here, paho-mqtt 2 costs 50-60 µs of CPU per QoS 1 publish at any in-flight window (and
    goes quadratic in acknowledgements with a large one), so a paho publisher needs about a core for
    10,000 patients: the load generator, not the system, would set the pace. Framing a PUBLISH is a
    few byte operations; a thread counts the broker's PUBACKs. Loopback benchmarks only (no TLS).
    """

    def __init__(self, host: str, port: int, client_id: str, username: str | None, password: str | None) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
        body = b"\x00\x04MQTT\x04" + bytes([flags]) + struct.pack("!H", 60) + _string(client_id.encode())
        if username is not None:
            body += _string(username.encode())
        if password is not None:
            body += _string(password.encode())
        self.sock.sendall(b"\x10" + _length(len(body)) + body)
        connack = self._read_exactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"the broker refused the load generator's connection (CONNACK {connack.hex()})")
        self.sock.settimeout(None)
        self.acknowledged = 0
        self._next_id = 0
        self._out: list[bytes] = []
        self._last_send = time.monotonic()
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                raise ConnectionError("the broker closed the load generator's connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk
            pos, end = 0, len(pending)
            while end - pos >= 2:
                kind, size, header = pending[pos], pending[pos + 1], 2
                if size & 0x80:  # a long packet: never sent to a publisher that subscribes to nothing
                    return
                if end - pos < header + size:
                    break
                if kind == 0x40:
                    self.acknowledged += 1
                pos += header + size
            pending = pending[pos:]

    def publish(self, topic: bytes, payload: bytes) -> None:
        """Frame one QoS 1 PUBLISH (sent by :meth:`flush`)."""
        self._next_id = self._next_id % 65_535 + 1
        variable = _string(topic) + struct.pack("!H", self._next_id)
        self._out.append(b"\x32" + _length(len(variable) + len(payload)) + variable + payload)

    def flush(self) -> None:
        """Write every framed packet; a PINGREQ if nothing was written for half the keep-alive."""
        now = time.monotonic()
        if not self._out and now - self._last_send > 30:
            self._out.append(b"\xc0\x00")
        if self._out:
            self.sock.sendall(b"".join(self._out))
            self._out.clear()
            self._last_send = now

    def wait_for_acks(self, total: int, timeout_s: float = 30.0) -> None:
        """Wait until ``total`` PUBACKs arrived (or ``timeout_s`` passed)."""
        deadline = time.monotonic() + timeout_s
        while self.acknowledged < total and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        """DISCONNECT and close the socket."""
        with contextlib.suppress(OSError):
            self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _connect(plan: LoadPlan, name: str) -> RawPublisher:
    return RawPublisher(plan.host, plan.port, name, plan.username, plan.password)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def _replayer(plan: LoadPlan, start_at: float) -> WorkerReport:
    """A process of its own: at ``replay_at_s``, every replaying gateway's backlog, at full speed."""
    client = _connect(plan, f"load-replay-{time.time_ns()}")
    report = WorkerReport(worker=-1)
    delay = start_at + plan.replay_at_s - time.time()
    if delay > 0:
        time.sleep(delay)
    now_ms = int(time.time() * 1000)
    first_ms = now_ms - plan.replay_s * 1000
    began = time.monotonic()
    try:
        for g in range(plan.replay_gateways):
            gateway, patient = replay_gateway(g), replay_patient_id(g)
            for signal, device in ((Signal.HEART_RATE, f"hr-r{g:05d}"), (Signal.SPO2, f"ox-r{g:05d}")):
                topic = vitals_topic(plan.ward, gateway, patient, device, str(signal)).encode()
                for seq, first in enumerate(range(0, plan.replay_s, plan.replay_batch), start=1):
                    samples = []
                    for second in range(first, min(first + plan.replay_batch, plan.replay_s)):
                        value = 72.0
                        if signal is Signal.SPO2:
                            low = plan.replay_low_from_s <= second < plan.replay_low_until_s
                            value = LOW_SPO2 if low else NORMAL_SPO2
                        samples.append(Sample(t=first_ms + second * 1000, v=value))
                    vitals = Vitals(
                        patient=patient,
                        device=device,
                        gateway=gateway,
                        signal=signal,
                        seq=seq,
                        samples=tuple(samples),
                    )
                    client.publish(topic, encode(vitals))
                    report.replay_messages += 1
                    report.replay_samples += len(samples)
                client.flush()
    except OSError as exc:
        report.failed += 1
        report.failure_reasons[f"replay stopped: {exc}"] = 1
    report.replay_seconds = time.monotonic() - began
    client.wait_for_acks(report.replay_messages)
    report.acknowledged = client.acknowledged
    client.close()
    return report


def _worker(plan: LoadPlan, worker: int, workers: int, start_at: float) -> WorkerReport:
    """Publish patients ``worker, worker + workers, ...`` on schedule from ``start_at`` (wall clock)."""
    client = _connect(plan, f"load-{worker}-{time.time_ns()}")
    report = WorkerReport(worker=worker)
    mine = list(range(worker, plan.patients, workers))
    topics = {
        i: (
            vitals_topic(plan.ward, _gateway(i), patient_id(i), f"hr-{i:05d}", str(Signal.HEART_RATE)).encode(),
            vitals_topic(plan.ward, _gateway(i), patient_id(i), f"ox-{i:05d}", str(Signal.SPO2)).encode(),
        )
        for i in mine
    }
    by_slice: list[list[int]] = [[] for _ in range(SLICES_PER_S)]
    for i in mine:
        by_slice[i % SLICES_PER_S].append(i)
    seconds = round(plan.duration_s)
    every = max(1, plan.samples_per_message)
    report.planned = 2 * sum(1 for i in mine for second in range(seconds) if (second + i) % every == every - 1)
    lateness: list[float] = []
    start_ms = int(start_at * 1000)
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    began = time.monotonic()
    try:
        for second in range(seconds):
            for slice_ in range(SLICES_PER_S):
                target = start_at + second + slice_ / SLICES_PER_S
                wait = target - time.time()
                if wait > 0:
                    time.sleep(wait)
                lateness.append(max(0.0, -wait * 1000))
                _publish_slice(plan, client, report, by_slice[slice_], topics, second, int(target * 1000), start_ms)
    except OSError as exc:
        report.failure_reasons[f"publishing stopped: {exc}"] = 1
        report.failed += report.planned - report.published
    report.publish_seconds = time.monotonic() - began
    client.wait_for_acks(report.published)
    report.acknowledged = client.acknowledged
    client.close()
    if lateness:
        report.lateness_ms_p50 = round(statistics.median(lateness), 2)
        report.lateness_ms_p99 = round(_percentile(lateness, 0.99), 2)
        report.lateness_ms_max = round(max(lateness), 2)
    return report


def _publish_slice(
    plan: LoadPlan,
    client: RawPublisher,
    report: WorkerReport,
    patients: list[int],
    topics: dict[int, tuple[bytes, bytes]],
    second: int,
    t_ms: int,
    start_ms: int,
) -> None:
    """One slice's messages: each patient due now sends its signals' last samples, then all are written."""
    every = max(1, plan.samples_per_message)
    onset = plan.onset_s
    sent = 0
    for i in patients:
        if (second + i) % every != every - 1:
            continue
        times = [t_ms - 1000 * back for back in range(min(every, second + 1) - 1, -1, -1)]
        lows = [bool(onset) and (t - start_ms) / 1000 >= onset[i] for t in times]
        hr_topic, ox_topic = topics[i]
        patient, gateway = patient_id(i), _gateway(i)
        hr = Vitals(
            patient=patient,
            device=f"hr-{i:05d}",
            gateway=gateway,
            signal=Signal.HEART_RATE,
            seq=second + 1,
            samples=tuple(Sample(t=t, v=72.0) for t in times),
        )
        ox = Vitals(
            patient=patient,
            device=f"ox-{i:05d}",
            gateway=gateway,
            signal=Signal.SPO2,
            seq=second + 1,
            samples=tuple(Sample(t=t, v=LOW_SPO2 if low else NORMAL_SPO2) for t, low in zip(times, lows, strict=True)),
        )
        client.publish(hr_topic, encode(hr))
        client.publish(ox_topic, encode(ox))
        sent += 2
        if any(lows):
            kept = report.low_samples.setdefault(patient, [])
            kept += [(t, 0) for t, low in zip(times, lows, strict=True) if low][: MAX_LOW_SAMPLES - len(kept)]
    client.flush()
    report.published += sent
    if onset:  # the low samples just written: stamp them with the time they left
        sent_ns = time.time_ns()
        for i in patients:
            stamped = report.low_samples.get(patient_id(i), [])
            for n in range(len(stamped) - 1, -1, -1):
                if stamped[n][1]:
                    break
                stamped[n] = (stamped[n][0], sent_ns)
