"""Authentication and authorisation of the API: people with roles, sessions and machine tokens.

Passwords are stored as argon2id hashes (argon2-cffi). Logging in returns a bearer token for a
session that ends after ``session_ttl`` of inactivity (automatic logoff) and at the latest after
``session_max``. Machine tokens (integrations, dashboards) have a role and optional expiry.
Break-glass: a person logged in with a clinical role may take emergency ``doctor`` rights for a
short time, with a reason; it is a separate token, audited by the API, that cannot mint another
and ends when its owner logs out. Tokens are random 256-bit values stored only as SHA-256 hashes,
so a copy of the database does not reveal them.

Logging in over the API (:class:`LoginService`) never runs argon2 on the event loop: verification
runs in a bounded worker pool, unknown names are not hashed at all (they wait as long as a
verification takes, so timing does not reveal which names exist), and :class:`LoginGuard` applies
per-client rate limits, progressive delays per client and name, and a global budget for clients that
fail. There is no per-name lockout, so nobody can keep a nurse locked out by guessing her name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import hashlib
import heapq
import itertools
import math
import multiprocessing
import os
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from wardwatch.alerting.errors import AlertingError
from wardwatch.alerting.store import Store, TokenRow

TOKEN_PREFIX: Final = "wwt_"  # noqa: S105 - a prefix that marks wardwatch tokens, not a secret
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024  # argon2 takes any length; a bound keeps request bodies honest
BREAK_GLASS_MS: Final = 30 * 60_000
NAME_PATTERN: Final = r"^[a-z0-9][a-z0-9_.@-]{0,63}$"
"""User and token names: lowercase ASCII, no spaces, control or bidirectional characters (OpenAPI-compatible)."""
_NAME_RE: Final = re.compile(NAME_PATTERN.removesuffix("$"))  # used with fullmatch: "$" accepts a final newline


class Role(enum.StrEnum):
    """What a user or token may do (see :data:`ROLE_PERMISSIONS`)."""

    VIEWER = "viewer"
    NURSE = "nurse"
    CHARGE_NURSE = "charge_nurse"
    DOCTOR = "doctor"
    ADMIN = "admin"


CLINICAL_ROLES: Final = frozenset({Role.NURSE, Role.CHARGE_NURSE, Role.DOCTOR})
"""Roles that care for patients: only these may break the glass."""


class Permission(enum.StrEnum):
    """One capability checked by an API endpoint."""

    READ_ALARMS = "read_alarms"
    ACT_ON_ALARMS = "act_on_alarms"  # acknowledge, silence, resolve
    READ_THRESHOLDS = "read_thresholds"
    WRITE_THRESHOLDS = "write_thresholds"
    READ_AUDIT = "read_audit"
    READ_METRICS = "read_metrics"
    MANAGE_USERS = "manage_users"
    MANAGE_PATIENTS = "manage_patients"  # registry: gateways, admission, kits, discharge
    READ_IDENTITY = "read_identity"  # registry: a patient's name, birth date, hospital number (clinical only)
    RECORD_OBSERVATIONS = "record_observations"  # a nurse's NEWS2 observations (clinical only)
    WRITE_NOTES = "write_notes"  # clinical review notes on a patient (clinical only)


_VIEW: Final = {Permission.READ_ALARMS, Permission.READ_THRESHOLDS, Permission.READ_METRICS}
_LEAD: Final = {
    Permission.ACT_ON_ALARMS,
    Permission.WRITE_THRESHOLDS,
    Permission.READ_AUDIT,
    Permission.MANAGE_PATIENTS,
    Permission.READ_IDENTITY,
    Permission.RECORD_OBSERVATIONS,
    Permission.WRITE_NOTES,
}
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.NURSE: frozenset(
        _VIEW
        | {Permission.ACT_ON_ALARMS, Permission.READ_IDENTITY, Permission.RECORD_OBSERVATIONS, Permission.WRITE_NOTES}
    ),
    Role.CHARGE_NURSE: frozenset(_VIEW | _LEAD),
    Role.DOCTOR: frozenset(_VIEW | _LEAD),
    # identity, observations and review notes are for those who care for patients
    Role.ADMIN: frozenset(Permission)
    - {Permission.READ_IDENTITY, Permission.RECORD_OBSERVATIONS, Permission.WRITE_NOTES},
}


class AuthError(AlertingError):
    """Bad credentials, or an invalid user/token request."""


class InvalidNameError(AuthError, ValueError):
    """A user or token name that is not allowed (it is never hashed, stored or audited)."""


class LoginThrottledError(AuthError):
    """Too many login attempts from this client (or from everyone): try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
    """A valid user or token name (unique user ids: no shared accounts); raises :class:`InvalidNameError`."""
    if not _NAME_RE.fullmatch(name):
        shown = ascii(name[:70])  # escaped: control and bidirectional characters never reach a log or a terminal
        raise InvalidNameError(
            f"name {shown} is not valid: 1-64 of lowercase letters, digits, '_', '.', '@', '-', starting with a "
            "letter or digit"
        )
    return name


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches the argon2 ``password_hash`` (module level, so a process pool can run it)."""
    try:
        return PasswordHasher().verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


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
        break_glass_ms: int = BREAK_GLASS_MS,
    ) -> None:
        self.store = store
        self.session_ttl_ms = session_ttl_ms
        self.session_max_ms = session_max_ms
        self.break_glass_ms = break_glass_ms
        self.hasher = PasswordHasher(time_cost=argon2_time_cost, memory_cost=argon2_memory_kib)

    def add_user(self, name: str, role: Role, password: str, now: int) -> None:
        """Create a user with an argon2id password hash."""
        self.store.add_user(check_name(name), str(role), self.hash_new_password(password), now)

    def hash_new_password(self, password: str) -> str:
        """The argon2id hash of an acceptable new password (raises :class:`AuthError` if too short or long)."""
        if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise AuthError(f"a password needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters")
        return self.hasher.hash(password)

    def set_password(self, name: str, password: str) -> None:
        """Change a user's password."""
        if not self.store.set_user(name, password_hash=self.hash_new_password(password)):
            raise AuthError(f"no user {name!r}")

    def login(self, name: str, password: str, now: int) -> tuple[str, int]:
        """Check the password and open a session: ``(token, idle expiry ms)``. Blocking: for the CLI and tests."""
        check_name(name)
        user = self.store.user(name)
        if user is None or user.disabled or not verify_password(user.password_hash, password):
            raise AuthError("wrong user name or password")
        if self.hasher.check_needs_rehash(user.password_hash):
            self.store.set_user(name, password_hash=self.hasher.hash(password))
        return self.open_session(name, user.role, now)

    def open_session(self, name: str, role: str, now: int) -> tuple[str, int]:
        """A new session token for a user whose password was checked: ``(token, idle expiry ms)``."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + self.session_ttl_ms
        self.store.add_token(
            TokenRow(token_hash(token), name, role, "session", now, expires, now + self.session_max_ms)
        )
        return token, expires

    def break_glass(self, principal: Principal, now: int) -> tuple[str, int]:
        """Emergency access: a short ``doctor`` token for a logged-in clinician; ``(token, expiry ms)``.

        Refused for machine tokens, for roles that do not care for patients, and from a break-glass
        token (no chains of emergency tokens). The token ends at :attr:`break_glass_ms`, when its owner
        logs out, or when the owner is disabled.
        """
        if principal.kind == "machine":
            raise AuthError("break-glass access is for people, not machine tokens")
        if principal.kind == "break_glass":
            raise AuthError("break-glass access cannot be taken from a break-glass token: use your own session")
        if principal.role not in CLINICAL_ROLES:
            allowed = ", ".join(sorted(CLINICAL_ROLES))
            raise AuthError(f"break-glass access is for clinical roles ({allowed}), not {principal.role}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        expires = now + self.break_glass_ms
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
            if user is None or user.disabled or Role(user.role) not in CLINICAL_ROLES:
                return None
            role = Role(row.role)
        else:
            role = Role(row.role)
        return Principal(row.name, role, row.kind)

    def logout(self, token: str) -> int:
        """End a session or token; a person's break-glass tokens end with it. Returns how many break-glass ended."""
        digest = token_hash(token)
        row = self.store.token(digest)
        self.store.delete_token(digest)
        if row is None or row.kind == "machine":
            return 0
        return self.store.delete_tokens(row.name, "break_glass")


# -- logging in over the API ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """How hard logging in may be tried (see :class:`LoginGuard`)."""

    client_rate_per_s: float = 1.0  # sustained attempts per client address ...
    client_burst: int = 10  # ... after a burst of this many
    client_in_flight: int = 4  # attempts of one client address being processed at once
    free_failures: int = 5  # the failure (per address and name, within failure_window_s) after which pauses start:
    delay_base_s: float = 1.0  # 1, 2, 4, ... seconds before that name's next attempt from that address is checked
    delay_max_s: float = 30.0
    failure_window_s: float = 900.0
    # failures of one address, all names together, after which the whole address pauses as above (guessing
    # across names); far more than a shared workstation's typos
    address_free_failures: int = 20
    # password verifications per second for names that failed lately, all together (an argon2id
    # verification at the default cost takes a core for ~0.1-0.3 s: the engine needs the CPU more) ...
    verify_rate_per_s: float = 0.5
    verify_burst: int = 2
    budget_exempt: int = 2  # typos a trusted client (one that logged in lately) may make and stay outside it
    verify_queue: int = 16  # verifications of such clients waiting for a worker; more are refused at once


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float

    def take(self, rate: float, burst: float, now: float) -> float:
        """Take one token: 0 if there was one, else the seconds until there will be."""
        self.tokens = min(burst, self.tokens + (now - self.at) * rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate


@dataclass(slots=True)
class _Client:
    bucket: _Bucket
    failures: deque[float] = field(default_factory=deque)
    in_flight: int = 0
    seen: float = 0.0
    not_before: float = 0.0  # no attempt before this (progressive delay after failures)
    trusted_until: float = 0.0  # logged in successfully lately: its verifications go first

    def prune(self, now: float, window_s: float) -> None:
        """Forget failures older than ``window_s``."""
        while self.failures and now - self.failures[0] > window_s:
            self.failures.popleft()

    def failed(self, now: float, free: int, limits: LoginLimits) -> None:
        """Count a failure; from the ``free``-th on, pause the next attempt (doubling, capped)."""
        self.failures.append(now)
        excess = len(self.failures) - free
        if excess >= 0:
            self.not_before = now + min(limits.delay_max_s, limits.delay_base_s * 2.0**excess)


class LoginGuard:
    """Per-client and global rate limits for logins, with progressive delays instead of a lockout.

    Pure bookkeeping; times are monotonic seconds. A client is an address (the browser's, when a
    trusted proxy such as the console says so: :mod:`wardwatch.alerting.proxies`); ``user`` is the name
    tried. The address gets a token bucket and a bound on attempts at once; failures count per address
    *and name*: from the ``free_failures``-th failure of a name within ``failure_window_s``, a pause
    before that name's next attempt from that address that doubles with each further failure (1, 2, 4
    ... s, capped), and the same for the whole address from its ``address_free_failures``-th failure
    (guessing across names). Attempts during a pause are answered at once with 429 and
    ``Retry-After``, never held open. So one nurse's typos never slow another nurse, at another
    workstation or at the same one. Password verifications (the expensive part) of names with recent
    failures share one global bucket and a bounded queue; names without failures are never budgeted.
    """

    _MAX_CLIENTS: Final = 10_000

    def __init__(self, limits: LoginLimits | None = None) -> None:
        self.limits = limits or LoginLimits()
        self._clients: dict[tuple[str, str | None], _Client] = {}  # (address, None) and (address, name)
        self._verify = _Bucket(float(self.limits.verify_burst), 0.0)
        self._verifying = 0

    def _state(self, client: str, user: str | None, now: float) -> _Client:
        state = self._clients.get((client, user))
        if state is None:
            if len(self._clients) >= self._MAX_CLIENTS:
                self._forget_idle(now)
            state = self._clients[(client, user)] = _Client(_Bucket(float(self.limits.client_burst), now))
        state.seen = now
        state.prune(now, self.limits.failure_window_s)
        return state

    def admit(self, client: str, now: float, user: str = "") -> None:
        """Let an attempt of ``client`` at ``user`` in, or raise :class:`LoginThrottledError` with the wait."""
        limits = self.limits
        account = self._state(client, user, now)
        address = self._state(client, None, now)
        if now < account.not_before:
            wait = account.not_before - now
            raise LoginThrottledError(
                f"too many failed logins for this name from this address: wait {math.ceil(wait)} s", wait
            )
        if now < address.not_before:
            wait = address.not_before - now
            raise LoginThrottledError(f"too many failed logins from this address: wait {math.ceil(wait)} s", wait)
        if address.in_flight >= limits.client_in_flight:
            raise LoginThrottledError("too many login attempts at once from this address", 1.0)
        wait = address.bucket.take(limits.client_rate_per_s, limits.client_burst, now)
        if wait > 0:
            raise LoginThrottledError("too many login attempts from this address: slow down", wait)
        address.in_flight += 1
        account.in_flight += 1

    def start_verification(self, client: str, now: float, user: str = "") -> int:
        """A password of ``client`` (for ``user``) is about to be verified: its priority (lowest goes first).

        Trusted (``user`` logged in successfully from ``client`` within ``failure_window_s``, has at most
        ``budget_exempt`` failures since and one attempt at a time: a clinician at a workstation, typos
        included): -1. A name without failures from this address in the window (a nurse at shift change,
        even at a workstation where someone else mistyped): 0. Neither is ever refused here. Every other
        client gets its name's recent failures plus its other attempts in flight, and shares the global
        verification budget and queue with all the others (:class:`LoginThrottledError` when they are
        exhausted: try again shortly). Guessing across names from one address is bounded by the address's
        pauses (``address_free_failures``) and the verification pool's size.
        """
        account = self._clients.get((client, user))
        address = self._clients.get((client, None))
        trusted = (
            account is not None
            and now < account.trusted_until
            and len(account.failures) <= self.limits.budget_exempt
            and account.in_flight <= 1
        )
        if trusted:
            priority = -1
        elif account is None or not account.failures:
            priority = 0
        else:
            priority = len(account.failures) + max(0, address.in_flight - 1 if address is not None else 0)
            if self._verifying >= self.limits.verify_queue:
                raise LoginThrottledError("the login service is busy: try again in a moment", 1.0)
            wait = self._verify.take(self.limits.verify_rate_per_s, self.limits.verify_burst, now)
            if wait > 0:
                raise LoginThrottledError("the login service is busy: try again in a moment", wait)
        self._verifying += 1
        return priority

    def end_verification(self) -> None:
        """A verification started with :meth:`start_verification` finished."""
        self._verifying -= 1

    def finish(self, client: str, succeeded: bool, now: float, user: str = "") -> None:
        """An admitted attempt of ``client`` at ``user`` ended (``succeeded``: right password)."""
        account = self._clients.get((client, user))
        address = self._clients.get((client, None))
        if account is None or address is None:
            return
        account.in_flight = max(0, account.in_flight - 1)
        address.in_flight = max(0, address.in_flight - 1)
        if succeeded:  # the name's failures end; the address's stay (logging in to one's own account clears nothing)
            account.failures.clear()
            account.not_before = 0.0
            account.trusted_until = now + self.limits.failure_window_s
            return
        account.failed(now, self.limits.free_failures, self.limits)
        address.failed(now, self.limits.address_free_failures, self.limits)

    def _forget_idle(self, now: float) -> None:
        idle = [c for c, s in self._clients.items() if s.in_flight == 0 and now - s.seen > self.limits.failure_window_s]
        for c in idle:
            del self._clients[c]
        if len(self._clients) >= self._MAX_CLIENTS:  # still full: forget the longest idle half
            by_age = sorted(
                (c for c, s in self._clients.items() if s.in_flight == 0), key=lambda c: self._clients[c].seen
            )
            for c in by_age[: len(by_age) // 2]:
                del self._clients[c]


HashExecutor = Literal["thread", "process"]


class LoginService:
    """Logging in without stalling the event loop (which also runs the alarm engine and the pager).

    argon2 verification runs in a pool of ``workers`` threads (argon2-cffi releases the GIL) or
    processes, at a lower CPU priority (nice +10) than the alarm engine; waiting verifications are
    served in order of their client's recent failures, so a clinician is not queued behind a guessing
    client. Unknown and disabled names are answered after a sleep as long as a typical verification,
    without hashing. :class:`LoginGuard` limits who may try how often.
    """

    def __init__(
        self,
        auth: Authenticator,
        guard: LoginGuard | None = None,
        *,
        workers: int = 1,
        executor: HashExecutor = "thread",
    ) -> None:
        self.auth = auth
        self.guard = guard or LoginGuard()
        self._pool: concurrent.futures.Executor = (
            concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
            )
            if executor == "process"
            else concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="argon2", initializer=_lower_priority
            )
        )
        self._free_workers = workers
        self.verifications = 0  # argon2 verifications run (for /metrics)
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (priority, arrival, wake-up)
        self._arrivals = itertools.count()
        started = time.perf_counter()
        auth.hasher.hash(secrets.token_urlsafe(16))  # what a verification costs, for unknown names to wait as long
        self._typical_s = time.perf_counter() - started

    def close(self) -> None:
        """Stop the worker pool."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def hash_new_password(self, password: str) -> str:
        """:meth:`Authenticator.hash_new_password` off the event loop (admins adding users)."""
        return await asyncio.to_thread(self.auth.hash_new_password, password)

    async def login(self, name: str, password: str, client: str, now_ms: int) -> tuple[str, int]:
        """``(token, idle expiry ms)`` or :class:`AuthError` (:class:`LoginThrottledError` when throttled)."""
        check_name(name)  # before anything is hashed, counted or audited
        guard = self.guard
        guard.admit(client, time.monotonic(), name)
        succeeded = False
        try:
            user = self.auth.store.user(name)
            if user is None or user.disabled:
                await asyncio.sleep(self._typical_s)  # same time as a verification, no CPU
                raise AuthError("wrong user name or password")
            priority = guard.start_verification(client, time.monotonic(), name)
            try:
                ok = await self._verify(priority, user.password_hash, password)
            finally:
                guard.end_verification()
            if not ok:
                raise AuthError("wrong user name or password")
            succeeded = True
        finally:
            guard.finish(client, succeeded, time.monotonic(), name)
        if self.auth.hasher.check_needs_rehash(user.password_hash):
            new_hash = await asyncio.to_thread(self.auth.hasher.hash, password)  # rare: after a cost change
            self.auth.store.set_user(name, password_hash=new_hash)
        return self.auth.open_session(name, user.role, now_ms)

    async def _verify(self, priority: int, password_hash: str, password: str) -> bool:
        """Verify in the pool once a worker is free; lower ``priority`` values are served first."""
        loop = asyncio.get_running_loop()
        if self._free_workers > 0:
            self._free_workers -= 1
        else:
            turn: asyncio.Future[None] = loop.create_future()
            heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # the worker was handed over just now: pass it on
                    self._release_worker()
                raise
        try:
            self.verifications += 1
            started = time.perf_counter()
            ok = await loop.run_in_executor(self._pool, verify_password, password_hash, password)
            self._typical_s = 0.9 * self._typical_s + 0.1 * (time.perf_counter() - started)
            return ok
        finally:
            self._release_worker()

    def _release_worker(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._free_workers += 1


def _lower_priority() -> None:
    """Pool initialiser: hashing yields the CPU to the alarm engine (per thread on Linux, inherited by argon2's lanes).

    nice +10, and on a machine with several cores only the last one: argon2's lanes run in parallel and
    would otherwise take every core at once.
    """
    with contextlib.suppress(OSError):
        os.nice(10)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cores) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cores[-1]})


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header value (whole seconds, at least 1)."""
    return str(max(1, math.ceil(seconds)))
