"""The alerting API's OpenAPI operations built from the request, response and parameter types.

A route module declares each operation once with :func:`operation`: its handler, the permission, the
request body type, the response type and a Struct each for its path and query parameters (the fields'
types and :class:`msgspec.Meta` constraints become the parameter schemas). :func:`components_of` then
gives the component schemas every operation of a path table refers to (msgspec ``schema_components``),
so a route module exports ``*_PATHS = {...}`` and ``*_SCHEMAS = components_of(*_PATHS)`` and the
document cannot name a schema it does not define.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from wardwatch.alerting.http import Handler

__all__ = ["Error", "components", "components_of", "operation", "parameters"]

REF_TEMPLATE: Final = "#/components/schemas/{name}"
TYPES_KEY: Final = "x-types"  # the types an operation refers to; removed when the document is assembled

PathTable = dict[str, dict[str, dict[str, Any]]]


class Error(msgspec.Struct):
    """Every error response: what went wrong and, where there is one, what to do."""

    error: str


def _ref(kind: type) -> dict[str, str]:
    return {"$ref": REF_TEMPLATE.format(name=kind.__name__)}


_ERROR_RESPONSE: Final = {"description": "error", "content": {"application/json": {"schema": _ref(Error)}}}


def components(types: Iterable[Any]) -> dict[str, Any]:
    """The component schemas of ``types`` (Structs, enums) and of every type they refer to."""
    _, schemas = msgspec.json.schema_components(tuple(types), ref_template=REF_TEMPLATE)
    return schemas


def components_of(*paths: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """The component schemas the operations of ``paths`` (built by :func:`operation`) refer to."""
    types: dict[str, Any] = {}
    for table in paths:
        for item in table.values():
            for op in item.values():
                types.update((kind.__name__, kind) for kind in op.get(TYPES_KEY, ()))
    return components(types.values())


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``T | None`` as ``T``: an absent parameter is the ``None``."""
    choices = [s for s in schema.get("anyOf", ()) if s != {"type": "null"}]
    if len(choices) == 1 and len(schema["anyOf"]) == 2:
        rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
        return {**choices[0], **rest}
    return schema


def parameters(kind: type[msgspec.Struct], where: str) -> list[dict[str, Any]]:
    """One OpenAPI parameter ``in`` ``where`` (path, query) per field of ``kind``, schema from the field's type."""
    schema = components((kind,))[kind.__name__]
    required = set(schema.get("required", ()))
    result = []
    for name, field_schema in schema["properties"].items():
        field_schema = _without_null(dict(field_schema))
        description = field_schema.pop("description", None)
        parameter: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required}
        if description:
            parameter["description"] = description
        parameter["schema"] = field_schema
        result.append(parameter)
    return result


def operation(
    summary: str,
    handler: Handler,
    permission: str | None,
    *,
    body: type | None = None,
    response: type | None = None,
    status: int = 200,
    path: type[msgspec.Struct] | None = None,
    query: type[msgspec.Struct] | None = None,
    statuses: Iterable[int] = (),
    media: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OpenAPI operation of ``handler`` (under ``x-handler``, for the router) from its types.

    ``response`` (a Struct or dataclass) is the JSON of a ``status`` answer; ``media`` instead gives the content of a
    non-JSON one (metrics, an event stream). Errors: ``statuses``, plus 401/403 for a permission, 400 for
    a body or query parameters, each an :class:`Error`.
    """
    op: dict[str, Any] = {"summary": summary}
    if permission is not None:
        op["description"] = f"Needs permission `{permission}`."
    else:
        op["security"] = []
    op["operationId"] = handler.__name__
    op["x-handler"] = handler
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    types: list[Any] = [Error]
    if body is not None:
        types.append(body)
    answer: dict[str, Any] = {"description": "OK"}
    if response is not None:
        types.append(response)
        answer = {
            "description": (response.__doc__ or "OK").strip().splitlines()[0],
            "content": {"application/json": {"schema": _ref(response)}},
        }
    elif media is not None:
        answer = {"description": "OK", "content": dict(media)}
    op["responses"] = {str(status): answer}
    errors = set(statuses)
    if permission is not None:
        errors |= {401, 403}
    if body is not None or query is not None:
        errors.add(400)
    found = (parameters(path, "path") if path is not None else []) + (
        parameters(query, "query") if query is not None else []
    )
    if found:
        op["parameters"] = found
    for error in sorted(errors):
        op["responses"][str(error)] = _ERROR_RESPONSE
    op[TYPES_KEY] = tuple(types)
    return op
