"""The registry's HTTP API under ``/api/v1/registry`` (authenticated and audited like the rest of the API).

:data:`REGISTRY_PATHS` (OpenAPI path items, each operation with its handler under ``x-handler``) and
:data:`REGISTRY_SCHEMAS` are merged into :data:`wardwatch.alerting.api.OPENAPI`, which registers the
routes. Changes need ``manage_patients`` (charge nurse, doctor, admin); reading the identity needs
``read_identity`` (clinical roles only, every read audited); listing needs ``read_alarms``.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from wardwatch.alerting.auth import Permission
from wardwatch.alerting.http import (
    SERVICE_KEY,
    Reason,
    bad_request,
    error,
    json_response,
    path_id,
    principal_of,
    read_reasoned_body,
    refusals,
    requires,
)
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.registry.identity import Identity, IdentityKeyError
from wardwatch.alerting.registry.registry import DeviceSpec, Registry, RegistryError
from wardwatch.alerting.routes.query import IdParam, PatientPath, read_query
from wardwatch.alerting.rules import PROFILES
from wardwatch.core.errors import WardwatchError
from wardwatch.core.ids import Identifier
from wardwatch.core.registry import GatewayKit
from wardwatch.core.schema import DeviceRole

REQUESTED_ID_PATTERN: Final = r"^p-[a-z0-9]+(-[a-z0-9]+)*$"
"""A patient id a caller may ask the registry to issue (a demo's fixed ids): never a name or a number."""

Address = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z:/_.-]+$")]
AdvertisedName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[ -~]+$")]
Profile = Annotated[str, msgspec.Meta(pattern="^(" + "|".join(sorted(PROFILES)) + ")$")]


class DeviceBody(msgspec.Struct, forbid_unknown_fields=True):
    """A device of a kit: id, role, and its address or advertised name."""

    id: Identifier
    role: Annotated[str, msgspec.Meta(pattern="^(" + "|".join(DeviceRole) + ")$")]  # every wearable type
    address: Address | None = None
    name: AdvertisedName | None = None

    def spec(self) -> DeviceSpec:
        """As the registry takes it."""
        return msgspec.convert(msgspec.to_builtins(self), DeviceSpec)


class GatewayBody(msgspec.Struct, forbid_unknown_fields=True):
    """Register a gateway (or change its home label and capacity)."""

    gateway: Identifier
    capacity: Annotated[int, msgspec.Meta(ge=0, le=64)]  # continuous-device connection slots
    reason: Reason
    ward: Identifier | None = None  # default: the service's only ward
    home: Annotated[str, msgspec.Meta(max_length=100, pattern=r"^[ -~]*$")] = ""


class AdmitBody(msgspec.Struct, forbid_unknown_fields=True):
    """Admit a patient; the registry issues the id (``patient``: ask for a specific ``p-...`` id)."""

    reason: Reason
    ward: Identifier | None = None
    profile: Profile | None = None
    identity: Identity | None = None
    patient: Annotated[str, msgspec.Meta(max_length=40, pattern=REQUESTED_ID_PATTERN)] | None = None


class IdentityBody(msgspec.Struct, forbid_unknown_fields=True):
    """Store (replace) a patient's identity."""

    identity: Identity
    reason: Reason


class KitBody(msgspec.Struct, forbid_unknown_fields=True):
    """Bind devices to the patient through a gateway, from now."""

    gateway: Identifier
    devices: Annotated[list[DeviceBody], msgspec.Meta(min_length=1, max_length=16)]
    reason: Reason


class SwapBody(msgspec.Struct, forbid_unknown_fields=True):
    """Replace one bound device by another, from now."""

    old_device: Identifier
    new: DeviceBody
    reason: Reason


class DischargeBody(msgspec.Struct, forbid_unknown_fields=True):
    """Discharge: why."""

    reason: Reason


class WardQuery(msgspec.Struct):
    """The ward to list (default: the service's only ward)."""

    ward: IdParam | None = None


class PatientsQuery(WardQuery):
    """The ward and, optionally, the status of the patients to list."""

    status: Literal["admitted", "discharged"] | None = None


class GatewayPath(msgspec.Struct):
    """The gateway an operation is about."""

    gateway: IdParam


class RegisteredGateway(msgspec.Struct):
    """A registered gateway: its capacity (continuous-device slots), devices bound now, kit revision."""

    gateway: str
    ward: str
    home: str
    capacity: int
    revision: int
    bound: int


class GatewayList(msgspec.Struct):
    """The ward's gateways."""

    ward: str
    gateways: list[RegisteredGateway]


class RegisteredPatient(msgspec.Struct):
    """A patient as the registry holds them (pseudonymous id, stay, profile; never the identity)."""

    patient: str
    ward: str
    status: Literal["admitted", "discharged"]
    admitted_at: int
    discharged_at: int | None
    discharge_reason: str | None
    profile: str | None
    has_identity: bool


class PatientList(msgspec.Struct):
    """The ward's patients."""

    ward: str
    patients: list[RegisteredPatient]


class Binding(msgspec.Struct):
    """A device bound to the patient through a gateway from ``since`` until ``until`` (``null``: still bound)."""

    device: str
    role: DeviceRole
    address: str | None
    name: str | None
    gateway: str
    since: int
    until: int | None


class PatientBindings(msgspec.Struct):
    """The patient's bindings after the change, oldest first."""

    patient: str
    bindings: list[Binding]


class PatientWithBindings(RegisteredPatient):
    """One patient with every binding, oldest first."""

    bindings: list[Binding]


class PatientIdentity(msgspec.Struct):
    """The patient's identity (clinical roles only; the read is audited)."""

    patient: str
    identity: Identity


class IdentityStored(msgspec.Struct):
    """The identity was stored (encrypted) and the change audited."""

    patient: str
    stored: bool


def _registry(request: web.Request) -> Registry:
    return request.app[SERVICE_KEY].registry


def _ward(request: web.Request, ward: str | None) -> str:
    wards = request.app[SERVICE_KEY].config.wards
    if ward is None:
        if len(wards) != 1:
            raise bad_request(f"ward is required (this service owns {', '.join(wards)})")
        return next(iter(wards))
    if ward not in wards:
        raise bad_request(f"ward must be one of this service's wards: {', '.join(wards)}")
    return ward


_registry_errors: Final = refusals(RegistryError, status_of={IdentityKeyError: 503, WardwatchError: 400})
"""Registry refusals answer their status and reason; a key problem is a 503 saying what to do (never plaintext);
a bad identifier is a 400."""


@requires(Permission.READ_ALARMS)
@_registry_errors
async def list_gateways(request: web.Request) -> web.Response:
    """The ward's gateways: capacity, continuous devices bound, kit revision."""
    ward = _ward(request, read_query(request, WardQuery).ward)
    return json_response({"ward": ward, "gateways": _registry(request).gateways(ward)})


@requires(Permission.MANAGE_PATIENTS)
@_registry_errors
async def register_gateway(request: web.Request) -> web.Response:
    """Register a gateway with its capacity (connection slots for continuous devices); audited."""
    body, reason = await read_reasoned_body(request, GatewayBody)
    ward = _ward(request, body.ward)
    gateway = await _registry(request).register_gateway(
        ward, body.gateway, body.home, body.capacity, principal_of(request).actor, reason
    )
    return json_response(gateway)


@requires(Permission.READ_ALARMS)
@_registry_errors
async def get_kit(request: web.Request) -> web.Response:
    """The gateway's kit document as published (retained) on its registry topic."""
    registry = _registry(request)
    gateway = path_id(request, "gateway")
    for ward in registry.wards:
        kit = registry.kit(ward, gateway)
        if kit is not None:
            return json_response(kit)
    return error(404, f"no gateway {gateway} in the registry")


@requires(Permission.READ_ALARMS)
@_registry_errors
async def list_patients(request: web.Request) -> web.Response:
    """The ward's patients (pseudonymous ids, status, profile; never identity)."""
    query = read_query(request, PatientsQuery)
    ward = _ward(request, query.ward)
    rows = _registry(request).patients(ward, query.status)
    return json_response({"ward": ward, "patients": [row.as_json() for row in rows]})


@requires(Permission.MANAGE_PATIENTS)
@_registry_errors
async def admit(request: web.Request) -> web.Response:
    """Admit a patient; returns the id the registry issued (use it everywhere instead of any real identifier)."""
    body, reason = await read_reasoned_body(request, AdmitBody)
    ward = _ward(request, body.ward)
    row = await _registry(request).admit(
        ward, principal_of(request).actor, reason, profile=body.profile, identity=body.identity, patient=body.patient
    )
    return json_response(row.as_json(), status=201)


@requires(Permission.READ_ALARMS)
@_registry_errors
async def get_patient(request: web.Request) -> web.Response:
    """One patient with every binding (device, role, gateway, since, until)."""
    registry = _registry(request)
    patient = path_id(request, "patient")
    row = registry.patient(patient)
    return json_response({**row.as_json(), "bindings": registry.bindings(patient)})


@requires(Permission.READ_IDENTITY)
@_registry_errors
async def get_identity(request: web.Request) -> web.Response:
    """The patient's identity (clinical roles only); every read is audited."""
    patient = path_id(request, "patient")
    identity = _registry(request).identity(patient, principal_of(request).actor)
    if identity is None:
        return error(404, f"no identity stored for patient {patient}")
    return json_response({"patient": patient, "identity": identity})


@requires(Permission.READ_IDENTITY)
@_registry_errors
async def put_identity(request: web.Request) -> web.Response:
    """Store (replace) the patient's identity, encrypted; audited without the identity itself."""
    patient = path_id(request, "patient")
    body, reason = await read_reasoned_body(request, IdentityBody)
    await _registry(request).set_identity(patient, body.identity, principal_of(request).actor, reason)
    return json_response({"patient": patient, "stored": True})


@requires(Permission.MANAGE_PATIENTS)
@_registry_errors
async def assign_kit(request: web.Request) -> web.Response:
    """Bind devices to the patient through a gateway (409 over the gateway's capacity or if a device is bound)."""
    patient = path_id(request, "patient")
    body, reason = await read_reasoned_body(request, KitBody)
    devices = [device.spec() for device in body.devices]
    bindings = await _registry(request).assign_kit(patient, body.gateway, devices, principal_of(request).actor, reason)
    return json_response({"patient": patient, "bindings": bindings})


@requires(Permission.MANAGE_PATIENTS)
@_registry_errors
async def swap_device(request: web.Request) -> web.Response:
    """Replace a bound device: the old one's samples are refused from now, the new one's accepted."""
    patient = path_id(request, "patient")
    body, reason = await read_reasoned_body(request, SwapBody)
    bindings = await _registry(request).swap_device(
        patient, body.old_device, body.new.spec(), principal_of(request).actor, reason
    )
    return json_response({"patient": patient, "bindings": bindings})


@requires(Permission.MANAGE_PATIENTS)
@_registry_errors
async def discharge(request: web.Request) -> web.Response:
    """Discharge: open alarms resolved ("discharged"), the engine forgets the patient, the kit is freed."""
    patient = path_id(request, "patient")
    _, reason = await read_reasoned_body(request, DischargeBody)
    row = await _registry(request).discharge(patient, principal_of(request).actor, reason)
    return json_response(row.as_json())


_PATIENT: Final = "/api/v1/registry/patients/{patient}"
_REFUSED: Final = (400, 404, 409, 503)  # a registry refusal, a missing identity key: see _registry_errors
REGISTRY_PATHS: Final[PathTable] = {
    "/api/v1/registry/gateways": {
        "get": operation(
            "Gateways of a ward",
            list_gateways,
            Permission.READ_ALARMS,
            response=GatewayList,
            query=WardQuery,
            statuses=_REFUSED,
        ),
        "post": operation(
            "Register a gateway (capacity: slots)",
            register_gateway,
            Permission.MANAGE_PATIENTS,
            body=GatewayBody,
            response=RegisteredGateway,
            statuses=_REFUSED,
        ),
    },
    "/api/v1/registry/gateways/{gateway}/kit": {
        "get": operation(
            "The gateway's kit document",
            get_kit,
            Permission.READ_ALARMS,
            response=GatewayKit,
            path=GatewayPath,
            statuses=_REFUSED,
        )
    },
    "/api/v1/registry/patients": {
        "get": operation(
            "Patients of a ward",
            list_patients,
            Permission.READ_ALARMS,
            response=PatientList,
            query=PatientsQuery,
            statuses=_REFUSED,
        ),
        "post": operation(
            "Admit a patient (returns the issued id)",
            admit,
            Permission.MANAGE_PATIENTS,
            body=AdmitBody,
            response=RegisteredPatient,
            status=201,
            statuses=_REFUSED,
        ),
    },
    _PATIENT: {
        "get": operation(
            "One patient with its bindings",
            get_patient,
            Permission.READ_ALARMS,
            response=PatientWithBindings,
            path=PatientPath,
            statuses=_REFUSED,
        )
    },
    _PATIENT + "/identity": {
        "get": operation(
            "The patient's identity (audited)",
            get_identity,
            Permission.READ_IDENTITY,
            response=PatientIdentity,
            path=PatientPath,
            statuses=_REFUSED,
        ),
        "put": operation(
            "Store the patient's identity",
            put_identity,
            Permission.READ_IDENTITY,
            body=IdentityBody,
            response=IdentityStored,
            path=PatientPath,
            statuses=_REFUSED,
        ),
    },
    _PATIENT + "/kit": {
        "post": operation(
            "Assign a kit (gateway + devices)",
            assign_kit,
            Permission.MANAGE_PATIENTS,
            body=KitBody,
            response=PatientBindings,
            path=PatientPath,
            statuses=_REFUSED,
        )
    },
    _PATIENT + "/swap": {
        "post": operation(
            "Swap a device",
            swap_device,
            Permission.MANAGE_PATIENTS,
            body=SwapBody,
            response=PatientBindings,
            path=PatientPath,
            statuses=_REFUSED,
        )
    },
    _PATIENT + "/discharge": {
        "post": operation(
            "Discharge with a reason",
            discharge,
            Permission.MANAGE_PATIENTS,
            body=DischargeBody,
            response=RegisteredPatient,
            path=PatientPath,
            statuses=_REFUSED,
        )
    },
}
REGISTRY_SCHEMAS: Final = components_of(REGISTRY_PATHS)
