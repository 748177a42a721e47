"""Authentication and authorisation of the API: people with roles, sessions and machine tokens.

Passwords are stored as argon2id hashes (argon2-cffi). Logging in returns a bearer token for a
session that ends after ``session_ttl`` of inactivity (automatic logoff) and at the latest after
``session_max``. Machine tokens (integrations, dashboards) have a role and optional expiry.
Break-glass: a logged-in person may take emergency ``doctor`` rights for a short time, with a
reason; it is a separate session token, audited by the API. Five failed logins for a name within
15 minutes lock that name out for 15 minutes (the attempts are audited). Tokens
are random 256-bit values stored only as SHA-256 hashes, so a copy of the database does not
reveal them.
"""

from __future__ import annotations

import enum
import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from wardwatch.alerting.manager import AlertingError
from wardwatch.alerting.store import Store, TokenRow

TOKEN_PREFIX: Final = "wwt_"  # noqa: S105 - a prefix that marks wardwatch tokens, not a secret
MIN_PASSWORD_LENGTH: Final = 12
MAX_FAILURES: Final = 5
LOCKOUT_MS: Final = 15 * 60_000
BREAK_GLASS_MS: Final = 60 * 60_000
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,63}$")


class Role(enum.StrEnum):
    """What a user or token may do (see :data:`ROLE_PERMISSIONS`)."""

    VIEWER = "viewer"
    NURSE = "nurse"
    CHARGE_NURSE = "charge_nurse"
    DOCTOR = "doctor"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    """One capability checked by an API endpoint."""

    READ_ALARMS = "read_alarms"
    ACT_ON_ALARMS = "act_on_alarms"  # acknowledge, silence, resolve
    READ_THRESHOLDS = "read_thresholds"
    WRITE_THRESHOLDS = "write_thresholds"
    READ_AUDIT = "read_audit"
    READ_METRICS = "read_metrics"
    MANAGE_USERS = "manage_users"


_VIEW: Final = {Permission.READ_ALARMS, Permission.READ_THRESHOLDS, Permission.READ_METRICS}
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.NURSE: frozenset(_VIEW | {Permission.ACT_ON_ALARMS}),
    Role.CHARGE_NURSE: frozenset(
        _VIEW | {Permission.ACT_ON_ALARMS, Permission.WRITE_THRESHOLDS, Permission.READ_AUDIT}
    ),
    Role.DOCTOR: frozenset(_VIEW | {Permission.ACT_ON_ALARMS, Permission.WRITE_THRESHOLDS, Permission.READ_AUDIT}),
    Role.ADMIN: frozenset(Permission),
}


class AuthError(AlertingError):
    """Bad credentials, or an invalid user/token request."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (session) or a machine token."""

    name: str
    role: Role
    kind: str  # "session", "machine" or "break_glass"

    @property
    def actor(self) -> str:
        """How this principal appears in the audit log (break-glass use is marked)."""
        return f"{self.name} (break-glass)" if self.kind == "break_glass" else self.name

    def can(self, permission: Permission) -> bool:
        """Whether this principal's role grants ``permission``."""
        return permission in ROLE_PERMISSIONS[self.role]


def token_hash(token: str) -> str:
    """How a token is stored and looked up."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """A valid user or token name (unique user ids: no shared accounts)."""
    if not _NAME_RE.match(name):
        raise AuthError(f"name {name!r} is not valid: 1-64 of lowercase letters, digits, '_', '.', '@', '-'")
    return name


class Authenticator:
    """Users, sessions and machine tokens over the alerting store. Times are ms since the epoch."""

    def __init__(
        self,
        store: Store,
        *,
        session_ttl_ms: int = 900_000,
        session_max_ms: int = 12 * 3_600_000,
        argon2_time_cost: int = 3,
        argon2_memory_kib: int = 65_536,
    ) -> None:
        self.store = store
        self.session_ttl_ms = session_ttl_ms
        self.session_max_ms = session_max_ms
        self._hasher = PasswordHasher(time_cost=argon2_time_cost, memory_cost=argon2_memory_kib)
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        self._failures: dict[str, list[int]] = {}

    def add_user(self, name: str, role: Role, password: str, now: int) -> None:
        """Create a user with an argon2id password hash."""
        check_name(name)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AuthError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        self.store.add_user(name, str(role), self._hasher.hash(password), now)

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password."""
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AuthError(f"password too short: at least {MIN_PASSWORD_LENGTH} characters")
        if not self.store.set_user(name, password_hash=self._hasher.hash(password)):
            raise AuthError(f"no user {name!r}")

    def login(self, name: str, password: str, now: int) -> tuple[str, int]:
        """Check the password and open a session: ``(bearer token, idle expiry ms)``."""
        recent = [t for t in self._failures.get(name, []) if now - t < LOCKOUT_MS]
        self._failures[name] = recent
        if len(recent) >= MAX_FAILURES:
            raise AuthError("too many failed logins: try again later")
        user = self.store.user(name)
        try:
            self._hasher.verify(user.password_hash if user else self._dummy_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            recent.append(now)
            raise AuthError("wrong user name or password") from None
        if user is None or user.disabled:
            recent.append(now)
            raise AuthError("wrong user name or password")
        self._failures.pop(name, None)
        if self._hasher.check_needs_rehash(user.password_hash):
            self.store.set_user(name, password_hash=self._hasher.hash(password))
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + self.session_ttl_ms
        self.store.add_token(
            TokenRow(token_hash(token), name, user.role, "session", now, expires, now + self.session_max_ms)
        )
        return token, expires

    def break_glass(self, principal: Principal, now: int, duration_ms: int = BREAK_GLASS_MS) -> tuple[str, int]:
        """Emergency access: a ``doctor`` session for ``principal`` lasting ``duration_ms``; ``(token, expiry)``."""
        if principal.kind == "machine":
            raise AuthError("break-glass access is for people, not machine tokens")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + duration_ms
        self.store.add_token(
            TokenRow(token_hash(token), principal.name, str(Role.DOCTOR), "break_glass", now, expires, expires)
        )
        return token, expires

    def create_machine_token(self, name: str, role: Role, now: int, ttl_ms: int | None = None) -> str:
        """A token for a machine (integration); shown once, stored hashed."""
        check_name(name)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + ttl_ms if ttl_ms is not None else None
        self.store.add_token(TokenRow(token_hash(token), name, str(role), "machine", now, expires, expires))
        return token

    def authenticate(self, token: str, now: int) -> Principal | None:
        """The principal of a bearer token, or ``None`` if unknown or expired; slides a session's expiry."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        digest = token_hash(token)
        row = self.store.token(digest)
        if row is None:
            return None
        if (row.expires is not None and now >= row.expires) or (
            row.hard_expires is not None and now >= row.hard_expires
        ):
            self.store.delete_token(digest)
            return None
        if row.kind == "session":
            user = self.store.user(row.name)
            if user is None or user.disabled:
                return None
            role = Role(user.role)  # a role change applies at once
            self.store.extend_token(digest, now + self.session_ttl_ms)
        elif row.kind == "break_glass":
            user = self.store.user(row.name)
            if user is None or user.disabled:
                return None
            role = Role(row.role)
        else:
            role = Role(row.role)
        return Principal(row.name, role, row.kind)

    def logout(self, token: str) -> None:
        """End a session (or revoke a token)."""
        self.store.delete_token(token_hash(token))
