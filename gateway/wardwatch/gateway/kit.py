"""The gateway's kit: which devices it holds for which patient, from the registry over MQTT (issue 12).

The registry publishes each gateway's :class:`~wardwatch.core.registry.GatewayKit` retained on
``wardwatch/v1/registry/{ward}/{gateway}``, a topic only that gateway (and the services) may read. The
gateway subscribes to it and binds and releases devices without a restart (``Gateway.apply_kit``).

* Until a kit arrives the ``[[devices]]`` list of the TOML file is the offline fallback.
* A kit replaces it; a later kit replaces an earlier one only with a higher ``revision``.
* The last kit taken is written beside the queue (``kit.json``, atomically), so a gateway restarting
  without broker access still knows its kit.
* A sample goes out under the patient of the binding that held at the sample's own time
  (:meth:`KitState.patient_at`); a sample or status of a device no binding held then is not published.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from wardwatch.core.errors import WardwatchError
from wardwatch.core.registry import GatewayKit, KitDevice, decode_document, encode_document
from wardwatch.gateway.config import DeviceBinding

__all__ = ["KitState", "binding_of", "kit_path"]

_log = logging.getLogger(__name__)


def kit_path(queue_path: Path) -> Path:
    """Where the last kit is kept: beside the queue."""
    return queue_path.with_name("kit.json")


def binding_of(device: KitDevice) -> DeviceBinding | None:
    """The session binding of a kit entry (by address when the kit gives one, else by name); None if unusable."""
    try:
        if device.address is not None:
            return DeviceBinding(id=device.id, patient=device.patient, role=device.role, address=device.address)
        if device.name is not None:
            return DeviceBinding(id=device.id, patient=device.patient, role=device.role, name=device.name)
    except ValueError as exc:
        _log.error("kit: device %s cannot be bound: %s", device.id, exc)
        return None
    _log.error("kit: device %s has neither address nor name: the gateway cannot find it", device.id)
    return None


class KitState:
    """The kit in force for one gateway (None: the TOML fallback), persisted at ``path``."""

    def __init__(self, ward: str, gateway: str, path: Path) -> None:
        self.ward = ward
        self.gateway = gateway
        self.path = path
        self.kit: GatewayKit | None = None

    def load(self) -> GatewayKit | None:
        """Take the kit persisted by an earlier run, if there is a valid one for this gateway."""
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.error(
                "cannot read the persisted kit %s: %s; using the config's devices until a kit arrives", self.path, exc
            )
            return None
        if self.accept(payload, persist=False):
            _log.info("kit revision %d (from %s) in force until the registry says more", self.revision, self.path)
        return self.kit

    @property
    def revision(self) -> int:
        """Revision of the kit in force (-1: none yet)."""
        return self.kit.revision if self.kit is not None else -1

    def accept(self, payload: bytes, *, persist: bool = True) -> bool:
        """Take a kit document if it is this gateway's and newer than the one in force; say whether it was."""
        if not payload:
            return False  # a cleared retained message: keep what is in force
        try:
            document = decode_document(payload)
        except WardwatchError as exc:
            _log.error("ignored a kit: %s", exc)
            return False
        if not isinstance(document, GatewayKit) or (document.ward, document.gateway) != (self.ward, self.gateway):
            _log.error(
                "ignored a registry document that is not the kit of gateway %s in ward %s", self.gateway, self.ward
            )
            return False
        if document.revision <= self.revision:
            return False
        self.kit = document
        if persist:
            self._persist(document)
        return True

    def _persist(self, kit: GatewayKit) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("wb") as file:
                file.write(encode_document(kit))
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(self.path)
        except OSError as exc:
            _log.error(
                "cannot keep kit revision %d in %s: %s (a restart without broker falls back)",
                kit.revision,
                self.path,
                exc,
            )

    def current_bindings(self) -> dict[str, DeviceBinding]:
        """Device id -> binding the gateway should hold now (kit in force only)."""
        if self.kit is None:
            return {}
        bindings = (binding_of(device) for device in self.kit.current_devices())
        return {binding.id: binding for binding in bindings if binding is not None}

    def patient_at(self, device: str, t_ms: int) -> str | None:
        """The patient ``device`` was bound to at ``t_ms`` by the kit in force (None: no binding held then)."""
        assert self.kit is not None
        for binding in self.kit.devices:
            if binding.id == device and binding.active_at(t_ms):
                return binding.patient
        return None
