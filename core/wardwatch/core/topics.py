"""The MQTT topic scheme, under the versioned root ``wardwatch/v1``.

::

    wardwatch/v1/vitals/{ward}/{gateway}/{patient}/{device}/{signal}   vitals samples (QoS 1)
    wardwatch/v1/vitals/{ward}/{gateway}/{patient}/{device}/batch      several signals' samples (vitals_batch)
    wardwatch/v1/device/{ward}/{gateway}/{patient}/{device}            device status (connected, battery, ...)
    wardwatch/v1/gateway/{ward}/{gateway}/status                       periodic gateway status
    wardwatch/v1/gateway/{ward}/{gateway}/availability                 "online"/"offline" (retained, last will)
    wardwatch/v1/gateway/{ward}/{gateway}/gap                          data-gap reports (queue overflow)
    wardwatch/v1/alarm/{ward}/{patient}                                alarm state changes
    wardwatch/v1/score/{ward}/{patient}                                the patient's current NEWS2 (News2Score)
    wardwatch/v1/page/{ward}/{destination}                             pages for nurse apps
    wardwatch/v1/deadletter/{service}[/{instance}]                     rejected input with the reason
    wardwatch/v1/registry/{ward}[/{gateway}]                           kit bindings (retained; core.registry)

Design:

* The message type comes first, then ward, then gateway, so the broker ACL confines a gateway to
  ``wardwatch/v1/{vitals,device,gateway}/{its ward}/{its id}/#`` (:func:`gateway_acl`): it cannot
  publish another gateway's data, nor alarms or pages.
* Consumers subscribe per type and ward (``wardwatch/v1/vitals/ward-a/#``) or per patient
  (``wardwatch/v1/vitals/+/+/p-123/#``).
* Every level is a pseudonymous identifier (:mod:`wardwatch.core.ids`): no names or other PHI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wardwatch.core.errors import TopicError
from wardwatch.core.ids import check_id

ROOT: Final = "wardwatch/v1"

VITALS: Final = "vitals"
DEVICE: Final = "device"
GATEWAY: Final = "gateway"
ALARM: Final = "alarm"
SCORE: Final = "score"
PAGE: Final = "page"
DEADLETTER: Final = "deadletter"
REGISTRY: Final = "registry"

#: Kinds where only live messages count. Services subscribe to them without retained messages (MQTT 5
#: Retain Handling 2) and refuse any published with the retain flag: a stored sample must never act again
#: (re-raise an alarm after a restart). Gateway availability, by contrast, is retained on purpose.
LIVE_ONLY_KINDS: Final = frozenset({VITALS, DEVICE})

AVAILABILITY_ONLINE: Final = b"online"
AVAILABILITY_OFFLINE: Final = b"offline"


def vitals_topic(ward: str, gateway: str, patient: str, device: str, signal: str) -> str:
    """Topic of one device's samples of one signal."""
    return f"{ROOT}/{VITALS}/{ward}/{gateway}/{patient}/{device}/{signal}"


#: The last level of a device's :class:`~wardwatch.core.schema.VitalsBatch` topic (never a signal name).
BATCH_LEAF: Final = "batch"


def vitals_batch_topic(ward: str, gateway: str, patient: str, device: str) -> str:
    """Topic of one device's vitals batches (``.../{device}/batch``, beside its per-signal topics)."""
    return f"{ROOT}/{VITALS}/{ward}/{gateway}/{patient}/{device}/{BATCH_LEAF}"


def is_vitals_batch_topic(topic: str) -> bool:
    """Whether ``topic`` is a vitals batch topic (cheap: no parsing or validation)."""
    return topic.endswith("/" + BATCH_LEAF) and topic.startswith(f"{ROOT}/{VITALS}/")


def device_status_topic(ward: str, gateway: str, patient: str, device: str) -> str:
    """Topic of a device's status messages."""
    return f"{ROOT}/{DEVICE}/{ward}/{gateway}/{patient}/{device}"


def gateway_status_topic(ward: str, gateway: str) -> str:
    """Topic of a gateway's periodic status."""
    return f"{ROOT}/{GATEWAY}/{ward}/{gateway}/status"


def availability_topic(ward: str, gateway: str) -> str:
    """Retained ``online``/``offline`` topic of a gateway (its MQTT last will says ``offline``)."""
    return f"{ROOT}/{GATEWAY}/{ward}/{gateway}/availability"


def gap_topic(ward: str, gateway: str) -> str:
    """Topic of a gateway's data-gap reports."""
    return f"{ROOT}/{GATEWAY}/{ward}/{gateway}/gap"


def alarm_topic(ward: str, patient: str) -> str:
    """Topic of a patient's alarm state changes."""
    return f"{ROOT}/{ALARM}/{ward}/{patient}"


def score_topic(ward: str, patient: str) -> str:
    """Topic of a patient's current NEWS2 (alerting publishes it; ingest, FHIR and nurse apps read it)."""
    return f"{ROOT}/{SCORE}/{ward}/{patient}"


def page_topic(ward: str, destination: str) -> str:
    """Topic a nurse app subscribes to for pages to ``destination``."""
    return f"{ROOT}/{PAGE}/{ward}/{destination}"


def deadletter_topic(service: str, instance: str | None = None) -> str:
    """Topic where ``service`` (optionally one ``instance`` of it) publishes input it rejected, with the reason.

    The broker ACL lets each service write ``deadletter/{service}/#`` and the ``operator`` read them all.
    """
    check_id(service, "service")
    if instance is None:
        return f"{ROOT}/{DEADLETTER}/{service}"
    return f"{ROOT}/{DEADLETTER}/{service}/{check_id(instance, 'instance')}"


def vitals_filter(ward: str = "+", gateway: str = "+", patient: str = "+") -> str:
    """Subscription filter for vitals, optionally narrowed to a ward, gateway or patient."""
    return f"{ROOT}/{VITALS}/{ward}/{gateway}/{patient}/#"


def ward_filter(kind: str, ward: str = "+") -> str:
    """Subscription filter for every message of ``kind`` in ``ward`` (``+`` for all wards)."""
    return f"{ROOT}/{kind}/{ward}/#"


@dataclass(frozen=True, slots=True)
class TopicParts:
    """A parsed wardwatch topic. Fields not present in that topic kind are ``None``."""

    kind: str
    ward: str | None = None
    gateway: str | None = None
    patient: str | None = None
    device: str | None = None
    signal: str | None = None
    leaf: str | None = None


_SHAPES: Final[dict[str, tuple[str, ...]]] = {
    VITALS: ("ward", "gateway", "patient", "device", "signal"),
    DEVICE: ("ward", "gateway", "patient", "device"),
    GATEWAY: ("ward", "gateway", "leaf"),
    ALARM: ("ward", "patient"),
    SCORE: ("ward", "patient"),
    PAGE: ("ward", "leaf"),
    DEADLETTER: ("leaf",),
}
_GATEWAY_LEAVES: Final = frozenset({"status", "availability", "gap"})


def parse_topic(topic: str) -> TopicParts:
    """Split a concrete wardwatch topic into its parts, validating every identifier."""
    prefix = ROOT + "/"
    if not topic.startswith(prefix):
        raise TopicError(f"topic {topic!r} is not under {ROOT}/")
    kind, *rest = topic[len(prefix) :].split("/")
    shape = _SHAPES.get(kind)
    if shape is None:
        raise TopicError(f"topic {topic!r}: unknown message kind {kind!r} (known: {', '.join(_SHAPES)})")
    if len(rest) != len(shape):
        raise TopicError(f"topic {topic!r}: a {kind} topic has {len(shape)} levels after the kind")
    values = {name: check_id(value, name) for name, value in zip(shape, rest, strict=True)}
    if kind == GATEWAY and values["leaf"] not in _GATEWAY_LEAVES:
        raise TopicError(f"topic {topic!r}: gateway topics end in one of {sorted(_GATEWAY_LEAVES)}")
    return TopicParts(kind=kind, **values)


def gateway_acl(username: str, ward: str) -> str:
    """Mosquitto ``acl_file`` entries that confine gateway ``username`` to its own topics in ``ward``."""
    check_id(username, "gateway id")
    check_id(ward, "ward id")
    lines = [f"user {username}"]
    lines += [f"topic write {ROOT}/{kind}/{ward}/{username}/#" for kind in (VITALS, DEVICE, GATEWAY)]
    lines.append(f"topic read {ROOT}/{REGISTRY}/{ward}/{username}")  # its own kit (wardwatch.core.registry)
    return "\n".join(lines) + "\n"
