"""Provenance in alerting: a vitals or device message counts only if its source was bound when it was taken.

Before the engine sees a vitals, device-status or data-gap message, :class:`ProvenanceGate` checks that

* the topic and the payload agree on gateway, patient, device (and signal): the ward and gateway
  come from the topic, which the broker's ACL ties to the publishing gateway, so a payload naming
  another patient is refused (``topic_mismatch``), whatever ``enforce`` says;
* with ``[registry] enforce = true`` (the default): the registry issued the patient id
  (``unknown_patient``), and :meth:`~wardwatch.core.registry.ProvenanceIndex.check` finds the gateway,
  patient and device bound to each other at each sample's time (``unknown_ward``, ``unknown_gateway``,
  ``unknown_device``, ``wrong_patient``, ``not_bound_at_time``). Samples of a message that pass are
  kept; when none does, the message is refused.

A refused message is dead-lettered (the existing dead-letter topic), counted by reason
(``wardwatch_alerting_provenance_refused``), and raises an operator notice: the technical alarm
``provenance_refused`` about the gateway, paged to the ward's ``operator`` destination (medium), at most
once per gateway every ``notice_interval_s``. It is never a clinical page; a ward without an operator
destination gets it as a low-priority alarm (listed by the API, paged only if the ward pages low).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import msgspec

from wardwatch.alerting.capacity import PROVENANCE_REFUSED
from wardwatch.core.registry import Refusal
from wardwatch.core.schema import DataGap, DeviceStatus, GatewayStatus, Priority, Sample, Vitals
from wardwatch.core.topics import TopicParts

if TYPE_CHECKING:
    from wardwatch.alerting.registry.registry import Registry
    from wardwatch.alerting.service import AlarmService

TOPIC_MISMATCH: Final = "topic_mismatch"
UNKNOWN_PATIENT: Final = "unknown_patient"

DeadLetterSink = Callable[[str, bytes, str], None]
"""(topic, payload, reason): publish a dead letter."""


class ProvenanceGate:
    """Refuses vitals and device messages whose source was not bound at the sample's time."""

    def __init__(
        self,
        service: AlarmService,
        registry: Registry,
        dead_letter: DeadLetterSink,
        implausible_time: Callable[[int, int, int], object] | None = None,
    ) -> None:
        self.service = service
        self.registry = registry
        self._implausible = implausible_time  # TimeGate.problem: a wrong device clock is the nurse's alarm
        self.enforce = service.config.registry.enforce
        self._dead_letter = dead_letter
        self._noticed: dict[tuple[str, str], int] = {}  # (ward, gateway) -> when the last notice was raised

    def vitals(self, topic: str, payload: bytes, parts: TopicParts, vitals: Vitals) -> Vitals | None:
        """``vitals`` with only the samples whose source was bound then; ``None``: refused (and reported)."""
        if (parts.gateway, parts.patient, parts.device, parts.signal) != (
            vitals.gateway,
            vitals.patient,
            vitals.device,
            str(vitals.signal),
        ):
            self._refuse(topic, payload, parts, TOPIC_MISMATCH, "the payload names another source than its topic")
            return None
        if not self.enforce:
            return vitals
        refusal = self._unissued(vitals.patient)
        if refusal is None:
            check = self.registry.index.check
            ward, gateway, patient, device = parts.ward or "", vitals.gateway, vitals.patient, vitals.device
            verdicts = [check(ward, gateway, patient, device, sample.t) for sample in vitals.samples]
            if all(verdict is None for verdict in verdicts):
                return vitals
            kept = tuple(sample for sample, verdict in zip(vitals.samples, verdicts, strict=True) if verdict is None)
            first = next(verdict for verdict in verdicts if verdict is not None)
            if not kept and self._clock_wrong_but_bound(ward, gateway, patient, device, vitals.samples):
                return vitals  # the time gate raises "device clock wrong" for this bound patient
            if kept:
                self._count(str(first), len(vitals.samples) - len(kept))
                return msgspec.structs.replace(vitals, samples=kept)
            refusal = str(first)
        self._refuse(topic, payload, parts, refusal, f"patient {vitals.patient}, device {vitals.device}")
        return None

    def device_status(self, topic: str, payload: bytes, parts: TopicParts, status: DeviceStatus) -> bool:
        """Whether a device status may reach the engine (refused ones are reported)."""
        if (parts.gateway, parts.patient, parts.device) != (status.gateway, status.patient, status.device):
            self._refuse(topic, payload, parts, TOPIC_MISMATCH, "the payload names another source than its topic")
            return False
        if not self.enforce:
            return True
        refusal = self._unissued(status.patient)
        if refusal is None:
            ward = parts.ward or ""
            verdict = self.registry.index.check(ward, status.gateway, status.patient, status.device, status.t)
            if verdict is None or self._clock_wrong_but_bound(
                ward, status.gateway, status.patient, status.device, (status,)
            ):
                return True
            refusal = str(verdict)
        self._refuse(topic, payload, parts, refusal, f"patient {status.patient}, device {status.device}")
        return False

    def data_gap(self, topic: str, payload: bytes, parts: TopicParts, gap: DataGap) -> bool:
        """Whether a gateway's data-gap report may reach the engine (it may name a patient and a device)."""
        if gap.gateway != parts.gateway:
            self._refuse(topic, payload, parts, TOPIC_MISMATCH, "the payload names another gateway than its topic")
            return False
        if not self.enforce or gap.patient is None:
            return True
        refusal = self._unissued(gap.patient)
        if refusal is None and gap.device is not None:
            check = self.registry.index.check
            verdicts = [
                check(parts.ward or "", gap.gateway, gap.patient, gap.device, t) for t in (gap.first_t, gap.last_t)
            ]
            if None in verdicts:
                return True
            refusal = str(verdicts[-1])
        if refusal is None:
            return True
        self._refuse(topic, payload, parts, refusal, f"data gap of patient {gap.patient}, device {gap.device}")
        return False

    def gateway_status(
        self, topic: str, payload: bytes, parts: TopicParts, status: GatewayStatus
    ) -> GatewayStatus | None:
        """``status`` with only the device links bound through its gateway at its time; ``None``: refused.

        The gateway's own health (queue, slots, availability) is judged by identity alone: the topic's
        gateway is the publishing principal (broker ACL), so the payload must name that gateway and ward.
        Each device link names a patient, and the engine learns device-to-patient bindings from it, so a
        link the registry did not bind through this gateway at ``status.t`` is dropped: a stale one (bound
        before, e.g. a swap the gateway has not taken yet) silently, counted; any other (another gateway's
        patient, a patient nobody admitted) counted, dead-lettered and noticed like a spoofed sample.
        """
        if (parts.ward, parts.gateway) != (status.ward, status.gateway):
            self._refuse(topic, payload, parts, TOPIC_MISMATCH, "the payload names another gateway than its topic")
            return None
        if not self.enforce or not status.devices:
            return status
        ward, kept, refused, reasons = status.ward, [], [], []
        for link in status.devices:
            verdict = self._unissued(link.patient) or self.registry.index.check(
                ward, status.gateway, link.patient, link.device, status.t
            )
            if verdict is None:
                kept.append(link)
            elif verdict == Refusal.NOT_BOUND_AT_TIME:
                self.service.metrics.provenance_refused.labels(reason=str(verdict)).inc()
            else:
                refused.append(f"{link.device} of {link.patient} ({verdict})")
                reasons.append(str(verdict))
        if refused:
            self._refuse(topic, payload, parts, reasons[0], "gateway status links " + ", ".join(refused))
        if len(kept) == len(status.devices):
            return status
        return msgspec.structs.replace(status, devices=tuple(kept))

    def _clock_wrong_but_bound(
        self, ward: str, gateway: str, patient: str, device: str, stamped: Sequence[Sample | DeviceStatus]
    ) -> bool:
        """Refused only for its times, which the time gate finds impossible, from a device bound now.

        Such a message goes on to the time gate, which keeps it from the engine and raises "device clock
        wrong" for the patient: a clock fault is the nurse's to know, not a provenance notice.
        """
        if self._implausible is None:
            return False
        now = self.service.clock.now_ms()
        times = [item.t for item in stamped]
        if self._implausible(min(times), max(times), now) is None:
            return False
        return self.registry.index.check(ward, gateway, patient, device, now) is None

    def _unissued(self, patient: str) -> str | None:
        return None if self.registry.issued(patient) else UNKNOWN_PATIENT

    def _count(self, reason: str, samples: int) -> None:
        self.service.metrics.provenance_refused.labels(reason=reason).inc()
        self.service.metrics.samples_ignored.labels(reason="provenance").inc(samples)

    def _refuse(self, topic: str, payload: bytes, parts: TopicParts, reason: str, what: str) -> None:
        self.service.metrics.provenance_refused.labels(reason=reason).inc()
        self._dead_letter(topic, payload, f"provenance refused ({reason}): {what}")
        ward, gateway = parts.ward, parts.gateway
        if ward is None or gateway is None:
            return
        now = self.service.clock.now_ms()
        last = self._noticed.get((ward, gateway))
        interval_ms = round(self.service.config.registry.notice_interval_s * 1000)
        if last is not None and now - last < interval_ms:
            return
        self._noticed[(ward, gateway)] = now
        ward_config = self.service.config.wards.get(ward)
        priority = self.service.config.registry.notice_priority
        if ward_config is None or ward_config.operator is None:
            priority = Priority.LOW
        text = (
            f"gateway {gateway}: messages refused by the registry ({reason}: {what}); "
            "check the gateway's kit and credentials"
        )
        self.service.technical(ward, gateway, PROVENANCE_REFUSED, priority, True, text)
