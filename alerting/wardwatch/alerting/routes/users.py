"""People and machines: list and create users, create machine tokens (admin)."""

from __future__ import annotations

from typing import Annotated, Final

import msgspec
from aiohttp import web

from wardwatch.alerting.audit import AuditEntry
from wardwatch.alerting.auth import MIN_PASSWORD_LENGTH, AuthError, Permission, Role, check_name
from wardwatch.alerting.http import SERVICE_KEY, requires
from wardwatch.alerting.http import error as _error
from wardwatch.alerting.http import json_response as _json
from wardwatch.alerting.http import now_ms as _now
from wardwatch.alerting.http import principal_of as _principal
from wardwatch.alerting.http import read_body as _body
from wardwatch.alerting.openapi import PathTable, components_of, operation
from wardwatch.alerting.routes.session import AUTH_KEY, LOGIN_KEY, Name, Password
from wardwatch.alerting.store import StoreError


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a user."""

    name: Name
    role: Role
    password: Password


class TokenBody(msgspec.Struct, forbid_unknown_fields=True):
    """Create a machine token (``ttl_s``: at most ten years; none: no expiry)."""

    name: Name
    role: Role
    ttl_s: Annotated[float, msgspec.Meta(gt=0, le=10 * 366 * 86_400)] | None = None


class User(msgspec.Struct):
    """A user and role (never a hash)."""

    name: str
    role: str
    disabled: bool


class UserList(msgspec.Struct):
    """Every user."""

    users: list[User]


class UserCreated(msgspec.Struct):
    """The user created."""

    name: str
    role: Role


class TokenCreated(msgspec.Struct):
    """The machine token, shown this once."""

    name: str
    role: Role
    token: str


@requires(Permission.MANAGE_USERS)
async def list_users(request: web.Request) -> web.Response:
    """Users and roles (never hashes)."""
    users = request.app[SERVICE_KEY].store.users()
    return _json(UserList(users=[User(name=u.name, role=u.role, disabled=u.disabled) for u in users]))


@requires(Permission.MANAGE_USERS)
async def add_user(request: web.Request) -> web.Response:
    """Create a user (admin)."""
    body = await _body(request, UserBody)
    service = request.app[SERVICE_KEY]
    try:
        check_name(body.name)
        password_hash = await request.app[LOGIN_KEY].hash_new_password(body.password)
        service.store.add_user(body.name, str(body.role), password_hash, _now())
    except (AuthError, StoreError) as exc:
        return _error(400, str(exc))
    service.store.audit(
        AuditEntry(
            t=_now(),
            actor=_principal(request).actor,
            action="user_added",
            details={"user": body.name, "role": body.role},
        )
    )
    return _json(UserCreated(name=body.name, role=body.role), status=201)


@requires(Permission.MANAGE_USERS)
async def create_token(request: web.Request) -> web.Response:
    """Create a machine token (admin); the token is shown once."""
    body = await _body(request, TokenBody)
    service = request.app[SERVICE_KEY]
    try:
        ttl = round(body.ttl_s * 1000) if body.ttl_s is not None else None
        token = request.app[AUTH_KEY].create_machine_token(body.name, body.role, _now(), ttl)
    except AuthError as exc:
        return _error(400, str(exc))
    service.store.audit(
        AuditEntry(
            t=_now(),
            actor=_principal(request).actor,
            action="token_created",
            details={"name": body.name, "role": body.role},
        )
    )
    return _json(TokenCreated(name=body.name, role=body.role, token=token), status=201)


USER_PATHS: Final[PathTable] = {
    "/api/v1/users": {
        "get": operation("List users", list_users, "manage_users", response=UserList),
        "post": operation("Create a user", add_user, "manage_users", body=UserBody, response=UserCreated, status=201),
    },
    "/api/v1/tokens": {
        "post": operation(
            "Create a machine token (shown once)",
            create_token,
            "manage_users",
            body=TokenBody,
            response=TokenCreated,
            status=201,
        )
    },
}
USER_SCHEMAS: Final = components_of(USER_PATHS)
USER_SCHEMAS["UserBody"]["properties"]["password"]["minLength"] = MIN_PASSWORD_LENGTH
