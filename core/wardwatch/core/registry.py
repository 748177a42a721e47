"""Kit bindings as they travel from the registry to gateways and services, and the provenance check.

The registry (in the alerting service that owns a ward) is the one record of which device is worn by which
patient through which gateway, since when and until when. It publishes, retained and QoS 1:

::

    wardwatch/v1/registry/{ward}/{gateway}   GatewayKit: that gateway's bindings (readable by that gateway
                                             and by the services only)
    wardwatch/v1/registry/{ward}             WardManifest: every gateway of the ward with its kit revision

A gateway binds and releases devices from its own :class:`GatewayKit` without a restart. Ingest and alerting
accept a sample only when :meth:`ProvenanceIndex.check` finds its gateway, patient and device bound to each
other at the sample's time; anything else is dead-lettered, counted and raised as an operator notice.

A kit keeps ended bindings (``until`` set) for as long as late samples can arrive (the gateway's disk
queue, device storage), so a sample is judged against the binding that held when it was taken, not now.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Final, Literal

import msgspec

from wardwatch.core import topics
from wardwatch.core.errors import SchemaError
from wardwatch.core.ids import Identifier, check_id
from wardwatch.core.schema import DeviceRole, EpochMillis

REGISTRY: Final = topics.REGISTRY

Revision = Annotated[int, msgspec.Meta(ge=0)]


def kit_topic(ward: str, gateway: str) -> str:
    """Retained topic of one gateway's kit (only that gateway and the services may read it)."""
    return f"{topics.ROOT}/{REGISTRY}/{check_id(ward, 'ward id')}/{check_id(gateway, 'gateway id')}"


def manifest_topic(ward: str) -> str:
    """Retained topic of a ward's manifest (services only)."""
    return f"{topics.ROOT}/{REGISTRY}/{check_id(ward, 'ward id')}"


def registry_filter(ward: str = "+") -> str:
    """Subscription filter for the manifest and every kit of ``ward`` (``+``: all wards)."""
    return f"{topics.ROOT}/{REGISTRY}/{ward}/#"


class KitDevice(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """One binding: device ``id`` worn by ``patient`` from ``since`` until ``until`` (``None``: still bound).

    The gateway finds the device by ``address`` or, where addresses rotate, by advertised ``name``.
    """

    id: Identifier
    patient: Identifier
    role: DeviceRole
    since: EpochMillis
    until: EpochMillis | None = None
    address: str | None = None
    name: str | None = None

    def active_at(self, t_ms: int) -> bool:
        """Whether this binding held at time ``t_ms`` (``since`` inclusive, ``until`` exclusive)."""
        return self.since <= t_ms and (self.until is None or t_ms < self.until)

    @property
    def current(self) -> bool:
        """Whether the binding has not ended (the gateway should keep this device connected)."""
        return self.until is None


class GatewayKit(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="gateway_kit"):
    """Every binding (current and recently ended) of one gateway, at registry ``revision``."""

    v: Literal[1] = 1
    ward: Identifier
    gateway: Identifier
    revision: Revision
    issued_at: EpochMillis
    devices: tuple[KitDevice, ...] = ()

    def current_devices(self) -> tuple[KitDevice, ...]:
        """The bindings a gateway should hold now."""
        return tuple(device for device in self.devices if device.current)


class WardManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, tag="ward_manifest"):
    """The gateways of one ward with the revision of each one's kit; a consumer is in step when it holds them all."""

    v: Literal[1] = 1
    ward: Identifier
    issued_at: EpochMillis
    gateways: dict[Identifier, Revision] = msgspec.field(default_factory=dict)


RegistryDocument = GatewayKit | WardManifest

_decoder: Final = msgspec.json.Decoder(RegistryDocument)
_encoder: Final = msgspec.json.Encoder()


def encode_document(document: RegistryDocument) -> bytes:
    """JSON bytes of a registry document."""
    return _encoder.encode(document)


def decode_document(payload: bytes) -> RegistryDocument:
    """Parse and validate a registry document; :class:`SchemaError` says what is wrong."""
    try:
        return _decoder.decode(payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise SchemaError(f"invalid registry document: {exc}") from exc


class Refusal(enum.StrEnum):
    """Why a sample's provenance was refused (a label of the ``provenance_refused`` counters)."""

    UNKNOWN_WARD = "unknown_ward"  # no manifest for the ward: the registry never issued it
    UNKNOWN_GATEWAY = "unknown_gateway"  # the ward's manifest does not list the gateway
    UNKNOWN_DEVICE = "unknown_device"  # the gateway's kit never bound this device
    WRONG_PATIENT = "wrong_patient"  # the device is bound, to another patient
    NOT_BOUND_AT_TIME = "not_bound_at_time"  # bound, but not at the sample's time (before admission, after discharge)


@dataclass(frozen=True, slots=True)
class ProvenanceIndex:
    """The latest manifest per ward and kit per gateway, answering "was this sample's source bound then?".

    Not thread-safe; one per consumer, fed from its registry subscription with :meth:`apply`.
    """

    manifests: dict[str, WardManifest]
    kits: dict[tuple[str, str], GatewayKit]
    # (ward, gateway) -> device -> its bindings in that kit, so check() looks a device up instead of
    # scanning the kit (kits of 200 devices: half the gate's cost per message)
    by_device: dict[tuple[str, str], dict[str, tuple[KitDevice, ...]]] = field(default_factory=dict, repr=False)

    @classmethod
    def empty(cls) -> ProvenanceIndex:
        """An index that knows no ward yet (refuses everything)."""
        return cls({}, {})

    def apply(self, document: RegistryDocument) -> bool:
        """Take ``document`` unless an equal or newer revision is already held; return whether it was taken."""
        if isinstance(document, WardManifest):
            held_manifest = self.manifests.get(document.ward)
            if held_manifest is not None and held_manifest.issued_at > document.issued_at:
                return False
            self.manifests[document.ward] = document
            return True
        key = (document.ward, document.gateway)
        held = self.kits.get(key)
        if held is not None and held.revision >= document.revision:
            return False
        self.kits[key] = document
        grouped: dict[str, list[KitDevice]] = {}
        for binding in document.devices:
            grouped.setdefault(binding.id, []).append(binding)
        self.by_device[key] = {device: tuple(bindings) for device, bindings in grouped.items()}
        return True

    def in_step(self, ward: str) -> bool:
        """Whether the ward's manifest is held and every kit it lists is held at (at least) its revision."""
        manifest = self.manifests.get(ward)
        if manifest is None:
            return False
        for gateway, revision in manifest.gateways.items():
            kit = self.kits.get((ward, gateway))
            if kit is None or kit.revision < revision:
                return False
        return True

    def check(self, ward: str, gateway: str, patient: str, device: str, t_ms: int) -> Refusal | None:
        """``None`` when ``device`` was bound to ``patient`` through ``gateway`` in ``ward`` at ``t_ms``."""
        manifest = self.manifests.get(ward)
        if manifest is None:
            return Refusal.UNKNOWN_WARD
        key = (ward, gateway)
        if gateway not in manifest.gateways or key not in self.kits:
            return Refusal.UNKNOWN_GATEWAY
        bindings = self.by_device[key].get(device, ())
        if not bindings:
            return Refusal.UNKNOWN_DEVICE
        of_patient = [binding for binding in bindings if binding.patient == patient]
        if not of_patient:
            return Refusal.WRONG_PATIENT
        if any(binding.active_at(t_ms) for binding in of_patient):
            return None
        return Refusal.NOT_BOUND_AT_TIME

    def patients(self, ward: str) -> frozenset[str]:
        """Every patient the ward's kits name (current or ended bindings)."""
        return frozenset(
            binding.patient
            for (kit_ward, _gateway), kit in self.kits.items()
            if kit_ward == ward
            for binding in kit.devices
        )


def kit_from_bindings(
    ward: str, gateway: str, revision: int, issued_at: int, devices: Iterable[KitDevice]
) -> GatewayKit:
    """Build a kit document (sorted by device id and start, for stable bytes)."""
    ordered = tuple(sorted(devices, key=lambda device: (device.id, device.since)))
    return GatewayKit(ward=ward, gateway=gateway, revision=revision, issued_at=issued_at, devices=ordered)
