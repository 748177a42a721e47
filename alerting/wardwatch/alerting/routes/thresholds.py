"""Per-patient threshold overrides: read (audited) and replace (checked, applied, saved, audited)."""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import Permission
from wardwatch.alerting.http import SERVICE_KEY, Reason, path_id, read_reasoned_body, requires
from wardwatch.alerting.http import bad_request as _bad_request
from wardwatch.alerting.http import error as _error
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.http import principal_of as _principal
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.routes.query import IdParam, PatientPath, read_query
from wardwatch.alerting.rules import RANGES, Thresholds
from wardwatch.alerting.service import AlarmService
from wardwatch.core.errors import ConfigError

# Clinical ranges a per-patient override must stay within: the rules' own table (one source for the
# rule file, the API and its OpenAPI document); the rules' consistency checks apply on top.
THRESHOLD_RANGES: Final[Mapping[str, tuple[float, float]]] = RANGES
_UNLISTED_RANGE: Final = (-1e6, 1e6)  # a setting added to Thresholds later: finite and sane until listed
_FIELD_TYPES: Final = {f.name: f.type for f in msgspec.structs.fields(Thresholds)}

Overrides = dict[str, float | int | bool | str]  # a string only for the rule ``profile``


class ThresholdsBody(msgspec.Struct, forbid_unknown_fields=True):
    """Replace a patient's threshold overrides (``{}`` removes them all). Values: see ``Thresholds``."""

    overrides: Overrides
    reason: Reason


class WardQuery(msgspec.Struct):
    """The ward whose defaults the effective thresholds start from (default: the service's first)."""

    ward: IdParam | None = None


class PatientThresholds(msgspec.Struct):
    """A patient's overrides and the effective thresholds (the ward's and defaults, overridden)."""

    patient: str
    overrides: dict[str, Any]
    effective: dict[str, Any]


class ThresholdsReplaced(msgspec.Struct):
    """The overrides before and after, and the effective thresholds now."""

    patient: str
    old: dict[str, Any]
    overrides: dict[str, Any]
    effective: dict[str, Any]


def check_overrides(overrides: Mapping[str, Any]) -> str | None:
    """The first problem with threshold ``overrides`` at the API boundary, naming the field, or ``None``."""
    for key, value in overrides.items():
        kind = _FIELD_TYPES.get(key)
        if kind is None:
            return f"{key}: unknown setting (known: {', '.join(sorted(_FIELD_TYPES))})"
        if kind is bool:
            if not isinstance(value, bool):
                return f"{key}: must be true or false, not {value!r}"
            continue
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else ()
        if choices:  # the rule profile, the NEWS2 SpO2 scale
            if isinstance(value, bool) or value not in choices:
                return f"{key}: must be one of {', '.join(map(str, choices))}, not {value!r}"
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{key}: must be a number, not {value!r}"
        if not math.isfinite(value):
            return f"{key}: must be a finite number"
        if kind is int and not float(value).is_integer():
            return f"{key}: must be a whole number, not {value!r}"
        low, high = THRESHOLD_RANGES.get(key, _UNLISTED_RANGE)
        if not low <= value <= high:
            return f"{key}: {value!r} is outside the allowed range {low:g}..{high:g}"
    return None


def _ward(request: web.Request, service: AlarmService) -> str:
    ward = read_query(request, WardQuery).ward
    if ward is None:
        return next(iter(service.config.wards))
    if ward not in service.config.wards:
        raise _bad_request(f"ward must be one of this service's wards: {', '.join(service.config.wards)}")
    return ward


def _effective(service: AlarmService, patient: str, overrides: dict[str, Any], ward: str) -> dict[str, Any]:
    """Validate ``overrides`` against the service's rules and return the effective thresholds on ``ward``."""
    rules = service.rules_with(patient, overrides)
    effective: dict[str, Any] = msgspec.to_builtins(rules.resolve(ward, patient))
    return effective


@requires(Permission.READ_THRESHOLDS)
async def get_thresholds(request: web.Request) -> web.Response:
    """A patient's overrides and effective thresholds; the read is audited."""
    service = request.app[SERVICE_KEY]
    patient = path_id(request, "patient")
    ward = _ward(request, service)
    overrides = service.rules.patient_overrides(patient)
    service.store.audit(
        AuditEntry(t=_now(), actor=_principal(request).actor, action="thresholds_read", patient=patient)
    )
    return _json(
        PatientThresholds(patient=patient, overrides=overrides, effective=_effective(service, patient, overrides, ward))
    )


@requires(Permission.WRITE_THRESHOLDS)
async def put_thresholds(request: web.Request) -> web.Response:
    """Replace a patient's overrides: checked, applied to the engine, then saved with its audit entry.

    400 names the offending field; nothing is saved or applied unless every step succeeds.
    """
    service = request.app[SERVICE_KEY]
    patient = path_id(request, "patient")
    ward = _ward(request, service)
    body, reason = await read_reasoned_body(request, ThresholdsBody)
    problem = check_overrides(body.overrides)
    if problem is not None:
        return _error(400, f"invalid thresholds: {problem}")
    try:
        effective = _effective(service, patient, body.overrides, ward)
        old = service.set_thresholds(patient, body.overrides, _principal(request).actor, reason)
    except ConfigError as exc:
        return _error(400, f"invalid thresholds: {exc.key}: {exc.problem}")
    return _json(ThresholdsReplaced(patient=patient, old=old, overrides=body.overrides, effective=effective))


def _override_schema(name: str, kind: Any) -> dict[str, Any]:
    if kind is bool:
        return {"type": "boolean"}
    low, high = THRESHOLD_RANGES.get(name, _UNLISTED_RANGE)
    if kind is int:
        return {"type": "integer", "minimum": int(low), "maximum": int(high)}
    if kind is float:
        return {"type": "number", "minimum": low, "maximum": high}
    choices = typing.get_args(kind)  # a Literal: its values (news2_scale 1 or 2, a profile name)
    if not choices:
        raise TypeError(f"threshold {name}: no OpenAPI schema for {kind!r}; add one here")
    return {"enum": list(choices)}


THRESHOLD_PATH: Final = "/api/v1/patients/{patient}/thresholds"
THRESHOLD_PATHS: Final[PathTable] = {
    THRESHOLD_PATH: {
        "get": operation(
            "Overrides and effective thresholds",
            get_thresholds,
            "read_thresholds",
            response=PatientThresholds,
            path=PatientPath,
            query=WardQuery,
        ),
        "put": operation(
            "Replace overrides: checked, applied to the engine, then saved and audited (with old and new)",
            put_thresholds,
            "write_thresholds",
            body=ThresholdsBody,
            response=ThresholdsReplaced,
            path=PatientPath,
            query=WardQuery,
        ),
    },
}
THRESHOLD_SCHEMAS: Final = components_of(THRESHOLD_PATHS)
# The overrides' schema from the rules' own table: each setting bounded (msgspec sees only the dict's types).
THRESHOLD_SCHEMAS["ThresholdsBody"]["properties"]["overrides"] = {
    "type": "object",
    "description": "Settings to override (the rest come from the ward and defaults); must also be consistent, "
    "e.g. hr_low_severe < hr_low < hr_high",
    "additionalProperties": False,
    "properties": {name: _override_schema(name, kind) for name, kind in _FIELD_TYPES.items()},
}
