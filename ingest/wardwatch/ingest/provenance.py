"""Provenance in ingest: a sample is stored only when the registry bound its source at the sample's time.

:class:`ProvenanceGate` sits between the subscription and the pipeline (:class:`~wardwatch.ingest.pipeline.Ingestor`)
and hands every message on, in arrival order, with a verdict: what to store (the whole payload, the samples
that passed, or nothing) and, for refused samples, the dead letter's reason. See ``docs/provenance.md``.

* **Registry documents** (retained ``wardwatch/v1/registry/...``, :mod:`wardwatch.core.registry`) feed a
  :class:`~wardwatch.core.registry.ProvenanceIndex`; the pipeline acknowledges them like any message.
* **Vitals and device status**: topic and payload must name the same gateway, patient and device (and
  signal), and :meth:`ProvenanceIndex.check` must pass for each sample's own time. A vitals batch is judged
  sample by sample too: what passed is stored (re-encoded as a batch of the kept samples), the rest
  dead-lettered with the reason, like a single message's. The gateway is the
  topic's, which the broker ACL ties to the publishing principal. Refused samples are dead-lettered with
  the :class:`~wardwatch.core.registry.Refusal` reason, counted, and logged once per (gateway, reason) a
  minute; the samples that passed are stored.
* **Hold at start-up**: a persistent session's queued messages reach ingest before the registry's retained
  documents (the broker sends those on subscribing, after the session's backlog). Judged at once they
  would all be refused as from an unknown ward. So while a ward is not
  :meth:`~wardwatch.core.registry.ProvenanceIndex.in_step`, its messages are held — not acknowledged, not
  dropped — for at most ``settle_s`` from the first held one, then judged against what has arrived.
  Messages are released in arrival order (those behind a held one wait too), so acknowledgements keep the
  order MQTT asks for and nothing is acknowledged before it is stored or dead-lettered.
* **Kept documents** (``state_file``): the last documents are written to disk and read at start-up. A
  restart after a crash then judges its backlog at once; without them, a backlog larger than the Receive
  Maximum would fill the hold before the documents (queued behind it at the broker) could arrive.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from wardwatch.core import topics
from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import RateLimitedLog
from wardwatch.core.registry import (
    GatewayKit,
    ProvenanceIndex,
    RegistryDocument,
    decode_document,
    encode_document,
    kit_topic,
    manifest_topic,
)
from wardwatch.core.schema import DeviceStatus, Series, decode, decode_vitals, decode_vitals_batch, encode
from wardwatch.ingest.metrics import IngestMetrics

__all__ = ["TOPIC_MISMATCH", "Forward", "ProvenanceGate"]

_log = logging.getLogger(__name__)

REGISTRY_PREFIX: Final = f"{topics.ROOT}/{topics.REGISTRY}/"
_VITALS_PREFIX: Final = f"{topics.ROOT}/{topics.VITALS}/"
_DEVICE_PREFIX: Final = f"{topics.ROOT}/{topics.DEVICE}/"
#: Refusal label when the payload names another gateway, patient, device or signal than its topic.
TOPIC_MISMATCH: Final = "topic_mismatch"
REFUSAL_LOG_INTERVAL_S: Final = 60.0

#: ``forward(topic, payload_to_store or None, packet_id, qos, generation, dead_letter_reason or None, original)``
Forward = Callable[[str, bytes | None, int, int, int, str | None, bytes], None]

_Held = tuple[str, bytes, int, int, int, str | None]  # topic, payload, mid, qos, generation, ward (None: registry)


class ProvenanceGate:
    """Judges every vitals and device message against the registry; holds a ward's until its registry arrives."""

    def __init__(
        self,
        settle_s: float,
        forward: Forward,
        metrics: IngestMetrics,
        *,
        state_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.index = ProvenanceIndex.empty()
        self.state_file = state_file
        self.settle_s = settle_s
        self._forward = forward
        self._metrics = metrics
        self._clock = clock
        self._in_step: dict[str, bool] = {}
        self._settle_until: dict[str, float] = {}  # ward -> end of its current hold (removed once in step)
        self._held: collections.deque[_Held] = collections.deque()
        self._generation = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refusal_log = RateLimitedLog(_log, REFUSAL_LOG_INTERVAL_S)
        self._document_log = RateLimitedLog(_log, REFUSAL_LOG_INTERVAL_S)
        self.held_total = 0  # messages ever held (tests, metrics)
        self._load()

    @property
    def held(self) -> int:
        """Messages held now."""
        return len(self._held)

    # -- arrival ----------------------------------------------------------------------------------

    def receive(self, topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        """The subscription's handler: apply, hand on, or hold one message."""
        if generation != self._generation:
            self._new_connection(generation)
        if topic.startswith(REGISTRY_PREFIX):
            self._apply(topic, payload)
            if self._held:
                self._hold((topic, payload, mid, qos, generation, None))
                self._release()
            else:
                self._forward(topic, None, mid, qos, generation, None, payload)
            return
        ward = _ward_of(topic)
        if not self._held and (self._in_step.get(ward, False) or not _judgeable(topic, payload) or self._ready(ward)):
            self._judge_and_forward(topic, payload, mid, qos, generation)  # malformed: dead-lettered at once
            return
        self._hold((topic, payload, mid, qos, generation, ward))
        self._release()

    def _new_connection(self, generation: int) -> None:
        # Held messages of the connection that dropped cannot be acknowledged any more (their packet ids may
        # name other messages now); the broker redelivers them on the new one. Nothing is lost.
        self._generation = generation
        self._held = collections.deque(item for item in self._held if item[4] == generation)
        self._metrics.provenance_held.set(len(self._held))

    def _hold(self, item: _Held) -> None:
        self._held.append(item)
        self.held_total += 1
        self._metrics.provenance_held.set(len(self._held))

    def _ready(self, ward: str) -> bool:
        """Whether a message of ``ward`` may be judged now (its registry is in step, or its hold has ended)."""
        if not ward or self._in_step.get(ward, False):
            return True  # no ward: not a vitals or device topic, the pipeline dead-letters it
        until = self._settle_until.get(ward)
        now = self._clock()
        if until is None:
            until = self._settle_until[ward] = now + self.settle_s
        return now >= until

    def _release(self) -> None:
        """Hand on held messages from the head while they may be judged; re-arm the timer for the rest."""
        while self._held:
            topic, payload, mid, qos, generation, ward = self._held[0]
            if ward is not None and not self._ready(ward):
                break
            self._held.popleft()
            if ward is None:
                self._forward(topic, None, mid, qos, generation, None, payload)
            else:
                self._judge_and_forward(topic, payload, mid, qos, generation)
        self._metrics.provenance_held.set(len(self._held))
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._held:
            ward = self._held[0][5]
            assert ward is not None
            if not self._in_step.get(ward, False):
                _log.info("holding %d messages until the registry of ward %s arrives", len(self._held), ward)
            delay = max(0.0, self._settle_until.get(ward, 0.0) - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._settle_ended)

    def _settle_ended(self) -> None:
        self._timer = None
        if self._held:
            ward = self._held[0][5]
            if ward is not None and not self._in_step.get(ward, False):
                _log.error(
                    "the registry of ward %s did not arrive within %.0f s: judging its held messages without it "
                    "(refused samples are dead-lettered). Is the registry (alerting) publishing its documents? Set "
                    "registry.state_file so that a restart does not wait for them behind its backlog",
                    ward,
                    self.settle_s,
                )
        self._release()

    # -- the registry -------------------------------------------------------------------------------

    def _apply(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a retained document cleared: the last one held stays (ended bindings are kept in kits)
        try:
            document = decode_document(payload)
        except WardwatchError as exc:
            self._document_log.warning(f"document:{topic}", "ignored a registry document on %s: %s", topic, exc)
            return
        expected = _topic_of(document)
        if topic != expected:
            self._document_log.warning(
                f"document:{topic}", "ignored a registry document on %s: it belongs on %s", topic, expected
            )
            return
        if self._take(document):
            self._save()

    def _take(self, document: RegistryDocument) -> bool:
        if not self.index.apply(document):
            return False
        ward = document.ward
        self._in_step[ward] = self.index.in_step(ward)
        if self._in_step[ward]:
            self._settle_until.pop(ward, None)
        return True

    def _load(self) -> None:
        if self.state_file is None:
            return
        try:
            lines = self.state_file.read_bytes().splitlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            _log.error("cannot read the kept registry documents %s: %s", self.state_file, exc)
            return
        for line in lines:
            try:
                self._take(decode_document(line))
            except WardwatchError as exc:
                _log.error("ignored a kept registry document in %s: %s", self.state_file, exc)
        _log.info("registry documents of %d wards kept in %s", len(self.index.manifests), self.state_file)

    def _save(self) -> None:
        """Write every document held, one JSON line each, atomically (rare: registry changes only)."""
        if self.state_file is None:
            return
        documents: list[RegistryDocument] = [*self.index.manifests.values(), *self.index.kits.values()]
        temporary = self.state_file.with_name(self.state_file.name + ".tmp")
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(b"".join(encode_document(document) + b"\n" for document in documents))
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(self.state_file)
        except OSError as exc:
            _log.error("cannot keep the registry documents in %s: %s", self.state_file, exc)

    # -- judging ----------------------------------------------------------------------------------

    def _judge_and_forward(self, topic: str, payload: bytes, mid: int, qos: int, generation: int) -> None:
        store, refused = self.judge(topic, payload)
        self._forward(topic, store, mid, qos, generation, refused, payload)

    def judge(self, topic: str, payload: bytes) -> tuple[bytes | None, str | None]:
        """``(what to store, why the rest is refused)``; a malformed message is passed on for the pipeline to refuse."""
        parts = topic.split("/")
        if topic.startswith(_VITALS_PREFIX) and len(parts) == 8 and parts[7] == topics.BATCH_LEAF:
            return self._judge_batch(topic, payload, parts)
        if topic.startswith(_VITALS_PREFIX) and len(parts) == 8:
            try:
                message = decode_vitals(payload)
            except WardwatchError:
                return payload, None
            ward, gateway, patient, device, signal = parts[3:]
            named = (message.gateway, message.patient, message.device, message.signal)
            if named != (gateway, patient, device, signal):
                return None, self._refuse(
                    ward,
                    gateway,
                    {TOPIC_MISMATCH: len(message.samples)},
                    len(message.samples),
                    f"the payload names gateway {message.gateway}, patient {message.patient}, device "
                    f"{message.device}, signal {message.signal}; the topic {topic}",
                )
            verdicts = [self.index.check(ward, gateway, patient, device, sample.t) for sample in message.samples]
            if not any(verdicts):
                return payload, None
            refused = collections.Counter(str(verdict) for verdict in verdicts if verdict is not None)
            kept = tuple(sample for sample, verdict in zip(message.samples, verdicts, strict=True) if verdict is None)
            reason = self._refuse(
                ward,
                gateway,
                refused,
                len(message.samples),
                f"device {device} of gateway {gateway} was not bound to patient {patient} at those samples' times",
            )
            return (encode(msgspec.structs.replace(message, samples=kept)) if kept else None), reason
        if topic.startswith(_DEVICE_PREFIX) and len(parts) == 7:
            try:
                status = decode(payload)
            except WardwatchError:
                return payload, None
            if not isinstance(status, DeviceStatus):
                return payload, None
            ward, gateway, patient, device = parts[3:]
            if (status.gateway, status.patient, status.device) != (gateway, patient, device):
                return None, self._refuse(
                    ward,
                    gateway,
                    {TOPIC_MISMATCH: 1},
                    1,
                    f"the payload names gateway {status.gateway}, patient {status.patient}, device {status.device}; "
                    f"the topic {topic}",
                )
            verdict = self.index.check(ward, gateway, patient, device, status.t)
            if verdict is None:
                return payload, None
            return None, self._refuse(
                ward, gateway, {str(verdict): 1}, 1, f"device {device} was not bound to patient {patient} then"
            )
        return payload, None

    def _judge_batch(self, topic: str, payload: bytes, parts: list[str]) -> tuple[bytes | None, str | None]:
        """A vitals batch: each sample judged at its own time, as if its series had come alone."""
        try:
            batch = decode_vitals_batch(payload)
        except WardwatchError:
            return payload, None
        ward, gateway, patient, device = parts[3:7]
        total = sum(len(series.samples) for series in batch.series)
        if (batch.gateway, batch.patient, batch.device) != (gateway, patient, device):
            return None, self._refuse(
                ward,
                gateway,
                {TOPIC_MISMATCH: total},
                total,
                f"the payload names gateway {batch.gateway}, patient {batch.patient}, device {batch.device}; "
                f"the topic {topic}",
            )
        check = self.index.check
        refused: collections.Counter[str] = collections.Counter()
        kept_series: list[Series] = []
        for series in batch.series:
            verdicts = [check(ward, gateway, patient, device, sample.t) for sample in series.samples]
            if not any(verdicts):
                kept_series.append(series)
                continue
            refused.update(str(verdict) for verdict in verdicts if verdict is not None)
            kept = tuple(sample for sample, verdict in zip(series.samples, verdicts, strict=True) if verdict is None)
            if kept:
                kept_series.append(msgspec.structs.replace(series, samples=kept))
        if not refused:
            return payload, None
        reason = self._refuse(
            ward,
            gateway,
            refused,
            total,
            f"device {device} of gateway {gateway} was not bound to patient {patient} at those samples' times",
        )
        if not kept_series:
            return None, reason
        return encode(msgspec.structs.replace(batch, series=tuple(kept_series))), reason

    def _refuse(self, ward: str, gateway: str, refused: dict[str, int], samples: int, detail: str) -> str:
        for label, n in refused.items():
            self._metrics.provenance_refused.labels(label).inc(n)
            self._refusal_log.warning(
                f"{gateway}:{label}",
                "provenance: refused %d samples from gateway %s in ward %s (%s): %s",
                n,
                gateway,
                ward,
                label,
                detail,
            )
        labels = ", ".join(f"{label} x{n}" for label, n in sorted(refused.items()))
        return f"provenance refused {sum(refused.values())} of {samples} samples ({labels}): {detail}"


def _judgeable(topic: str, payload: bytes) -> bool:
    """Whether the registry decides this message's fate (a malformed one is dead-lettered regardless)."""
    parts = topic.split("/")
    try:
        if topic.startswith(_VITALS_PREFIX) and len(parts) == 8:
            if parts[7] == topics.BATCH_LEAF:
                decode_vitals_batch(payload)
            else:
                decode_vitals(payload)
            return True
        return topic.startswith(_DEVICE_PREFIX) and len(parts) == 7 and isinstance(decode(payload), DeviceStatus)
    except WardwatchError:
        return False


def _ward_of(topic: str) -> str:
    parts = topic.split("/", 4)
    return parts[3] if len(parts) > 4 else ""


def _topic_of(document: RegistryDocument) -> str:
    if isinstance(document, GatewayKit):
        return kit_topic(document.ward, document.gateway)
    return manifest_topic(document.ward)
