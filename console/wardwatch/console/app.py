"""The console's back end (aiohttp): static assets, sessions, a relay to the alerting API, trends from InfluxDB.

The browser talks only to this server. It logs in here; the console logs in to the alerting API on
the user's behalf and keeps the API token in a server-side session (the browser holds only an
HttpOnly, SameSite=Strict cookie naming that session). State-changing calls need the session's
CSRF token in ``X-CSRF-Token`` and a JSON body. Every response carries a strict
Content-Security-Policy (no inline scripts or styles, nothing from elsewhere).

A session ends after ``idle_logout_s`` without user input (the page reports keyboard, pointer and
touch input with ``POST /api/activity``; the live stream and data reads do not count) or after
``session_max_s``. The live board is the alerting API's server-sent-events stream, relayed with a
write timeout: a stalled browser loses its stream, never slows the alerting service (which has its
own bounded buffer per stream). Trends come from InfluxDB with a read-only user: raw data for the
last hour, the downsampled policy for 24 h and 7 d.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import re
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import msgspec
from aiohttp import web

from wardwatch.console.config import ConsoleConfig
from wardwatch.console.trends import TrendRange, TrendReader
from wardwatch.core.ids import ID_PATTERN

__all__ = ["STATIC_DIR", "Session", "SessionStore", "build_app", "serve_console"]

_log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "static"
COOKIE: Final = "ww_console"
CSRF_HEADER: Final = "X-CSRF-Token"
RELAY_WRITE_TIMEOUT_S: Final = 10.0
_SESSION_CHECK_S: Final = 1.0  # how often a relayed stream checks that its session is still alive

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; media-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
_ID_RE: Final = re.compile(ID_PATTERN.removesuffix("$"))
_ACTIONS: Final = frozenset({"acknowledge", "silence", "resolve"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Session:
    """One logged-in user: the alerting token stays here, on the server."""

    sid: str
    token: str
    name: str
    role: str
    csrf: str
    created: float
    last_active: float


class SessionStore:
    """Server-side sessions with idle and absolute expiry (monotonic clock)."""

    def __init__(self, idle_s: float, max_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.max_s = max_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        self._timed_out: collections.OrderedDict[str, None] = collections.OrderedDict()  # to say why, a while

    def create(self, token: str, name: str, role: str) -> Session:
        """A new session (a fresh id and CSRF token)."""
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), token, name, role, secrets.token_urlsafe(32), now, now)
        self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session called ``sid`` (``None``: unknown or expired; an expired one is removed)."""
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if self.expired(session):
            self._forget(session)
            return None
        return session

    def timed_out(self, sid: str | None) -> bool:
        """``sid`` named a session that ended by itself (idle or too old), not one that never was."""
        return sid is not None and sid in self._timed_out

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)
        self._timed_out[session.sid] = None
        while len(self._timed_out) > 10_000:
            self._timed_out.popitem(last=False)

    def expired(self, session: Session) -> bool:
        """Idle too long, or older than the absolute limit."""
        now = self._clock()
        return now - session.last_active > self.idle_s or now - session.created > self.max_s

    def touch(self, session: Session) -> None:
        """The user did something."""
        session.last_active = self._clock()

    def end(self, session: Session) -> None:
        """Forget a session (logout)."""
        self._sessions.pop(session.sid, None)

    def sweep(self) -> list[Session]:
        """Remove and return the expired sessions."""
        gone = [s for s in self._sessions.values() if self.expired(s)]
        for session in gone:
            self._forget(session)
        return gone


CONFIG_KEY: Final = web.AppKey("config", ConsoleConfig)
SESSIONS_KEY: Final = web.AppKey("sessions", SessionStore)
HTTP_KEY: Final = web.AppKey("http", aiohttp.ClientSession)
TRENDS_KEY: Final = web.AppKey("trends", TrendReader)
SESSION_KEY: Final = web.RequestKey("session", Session)
STOPPING_KEY: Final = web.AppKey("stopping", asyncio.Event)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers={"Cache-Control": "no-store"})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


# Routes that need no session, and the state-changing routes that also need the CSRF token.
_PUBLIC: Final = frozenset({"/", "/api/login", "/api/config", "/healthz"})


@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on everything; a session on /api; CSRF and JSON on state changes."""
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        exc.headers.update(_SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(_SECURITY_HEADERS)
        if request.app[CONFIG_KEY].tls_cert is not None:
            response.headers["Strict-Transport-Security"] = "max-age=31536000"
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "POST":
        if request.content_type != "application/json":
            return _error(415, "send JSON (Content-Type: application/json)")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _error(403, "cross-origin request refused")
    if request.path.startswith("/api/") and request.path not in _PUBLIC:
        sessions = request.app[SESSIONS_KEY]
        sid = request.cookies.get(COOKIE)
        session = sessions.get(sid)
        if session is None:
            if sessions.timed_out(sid):
                return _error(401, "You were logged out after a period without activity. Log in again.")
            return _error(401, "Not logged in: log in first.")
        if request.method == "POST":
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                return _error(403, "missing or wrong CSRF token: reload the page")
            sessions.touch(session)
        request[SESSION_KEY] = session
    return await handler(request)


# -- pages and sessions --------------------------------------------------------------------------


async def index(request: web.Request) -> web.FileResponse:
    """The single page (no inline script: it loads /static/app.js)."""
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


async def healthz(request: web.Request) -> web.Response:
    """Liveness of the console itself."""
    return _json({"status": "ok"})


async def client_config(request: web.Request) -> web.Response:
    """What the page needs before login: the ward, the idle logout and staleness limits."""
    config = request.app[CONFIG_KEY]
    return _json({"ward": config.ward, "idle_logout_s": config.idle_logout_s, "stale_after_s": config.stale_after_s})


def _session_json(request: web.Request, session: Session) -> dict[str, Any]:
    config = request.app[CONFIG_KEY]
    return {
        "name": session.name,
        "role": session.role,
        "csrf": session.csrf,
        "ward": config.ward,
        "idle_logout_s": config.idle_logout_s,
        "stale_after_s": config.stale_after_s,
    }


class _LoginBody(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    password: str


async def login(request: web.Request) -> web.Response:
    """Log in to the alerting API on the user's behalf; the token stays in the server-side session."""
    try:
        body = msgspec.json.decode(await request.read(), type=_LoginBody)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return _error(400, "send {name, password}")
    config = request.app[CONFIG_KEY]
    try:
        async with request.app[HTTP_KEY].post(
            config.alerting.url + "/api/v1/login",
            json={"name": body.name, "password": body.password},
            # the browser's address (never one the browser wrote itself): the API throttles and audits logins
            # by it when it trusts this console (api.trusted_proxies), else by the console's own address
            headers={"X-Forwarded-For": request.remote or "unknown"},
        ) as upstream:
            answer = await upstream.json(content_type=None)
            if upstream.status != 200:
                message = answer.get("error", "login failed") if isinstance(answer, dict) else "login failed"
                headers = {"Retry-After": upstream.headers["Retry-After"]} if "Retry-After" in upstream.headers else {}
                response = _error(upstream.status if upstream.status in (400, 401, 429) else 502, message)
                response.headers.update(headers)
                return response
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        _log.error("login: the alerting API is unreachable: %s", exc)
        return _error(503, "the alarm service cannot be reached; try again shortly")
    session = request.app[SESSIONS_KEY].create(answer["token"], body.name, answer.get("role") or "unknown")
    response = _json(_session_json(request, session))
    response.set_cookie(
        COOKIE,
        session.sid,
        httponly=True,
        samesite="Strict",
        secure=config.tls_cert is not None,
        path="/",
    )
    return response


async def current_session(request: web.Request) -> web.Response:
    """Who is logged in (and the CSRF token for this page)."""
    return _json(_session_json(request, request[SESSION_KEY]))


async def activity(request: web.Request) -> web.Response:
    """The user touched the keyboard, pointer or screen (the middleware has refreshed the session)."""
    return _json({"idle_logout_s": request.app[SESSIONS_KEY].idle_s})


async def logout(request: web.Request) -> web.Response:
    """End the session here and at the alerting API."""
    session = request[SESSION_KEY]
    request.app[SESSIONS_KEY].end(session)
    await _end_upstream(request.app, session)
    response = _json({"status": "logged out"})
    response.del_cookie(COOKIE, path="/")
    return response


async def _end_upstream(app: web.Application, session: Session) -> None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with app[HTTP_KEY].post(
            app[CONFIG_KEY].alerting.url + "/api/v1/logout", headers={"Authorization": f"Bearer {session.token}"}
        ):
            pass


# -- relay to the alerting API -------------------------------------------------------------------


async def _relay(
    request: web.Request, method: str, path: str, *, params: dict[str, str] | None = None, body: bytes | None = None
) -> web.Response:
    session = request[SESSION_KEY]
    config = request.app[CONFIG_KEY]
    headers = {"Authorization": f"Bearer {session.token}"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    try:
        async with request.app[HTTP_KEY].request(
            method, config.alerting.url + path, params=params, data=body, headers=headers
        ) as upstream:
            payload = await upstream.read()
            status = upstream.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        _log.error("the alerting API is unreachable (%s %s): %s", method, path, exc)
        return _error(503, "the alarm service cannot be reached; nothing was changed, try again shortly")
    if status == 401:  # the API session expired or was ended: end ours too
        request.app[SESSIONS_KEY].end(session)
        return _error(401, "your session at the alarm service ended: log in again")
    return web.Response(
        body=payload, status=status, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _pick(request: web.Request, *names: str) -> dict[str, str]:
    return {name: request.query[name] for name in names if name in request.query}


def _id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not _ID_RE.fullmatch(value):
        problem = msgspec.json.encode({"error": f"{name} is not a wardwatch identifier"}).decode()
        raise web.HTTPBadRequest(text=problem, content_type="application/json")
    return value


async def board(request: web.Request) -> web.Response:
    """The ward's live board (snapshot)."""
    ward = request.app[CONFIG_KEY].ward
    return await _relay(request, "GET", f"/api/v1/wards/{ward}/live")


async def alarms(request: web.Request) -> web.Response:
    """Alarms by state (and patient)."""
    params = {"ward": request.app[CONFIG_KEY].ward, **_pick(request, "state", "patient", "limit")}
    return await _relay(request, "GET", "/api/v1/alarms", params=params)


async def alarm(request: web.Request) -> web.Response:
    """One alarm with its page log."""
    return await _relay(request, "GET", f"/api/v1/alarms/{_id(request, 'alarm_id')}")


async def alarm_action(request: web.Request) -> web.Response:
    """Acknowledge, silence (minutes, bounded by the API) or resolve, with a note."""
    action = request.match_info["action"]
    if action not in _ACTIONS:
        return _error(404, "no such action")
    alarm_id = _id(request, "alarm_id")
    return await _relay(request, "POST", f"/api/v1/alarms/{alarm_id}/{action}", body=await request.read())


async def audit(request: web.Request) -> web.Response:
    """The audit log (roles that may read it; others get the API's 403)."""
    params = _pick(request, "since", "alarm_id", "patient", "after_seq", "limit")
    return await _relay(request, "GET", "/api/v1/audit", params=params)


async def thresholds(request: web.Request) -> web.Response:
    """A patient's effective thresholds (the read is audited by the API)."""
    patient = _id(request, "patient")
    ward = request.app[CONFIG_KEY].ward
    return await _relay(request, "GET", f"/api/v1/patients/{patient}/thresholds", params={"ward": ward})


async def trends(request: web.Request) -> web.Response:
    """HR, SpO2, pulse rate and perfusion of a patient for ``range`` = 1h, 24h or 7d."""
    patient = _id(request, "patient")
    try:
        span = TrendRange(request.query.get("range", "1h"))
    except ValueError:
        return _error(400, "range must be 1h, 24h or 7d")
    try:
        result = await request.app[TRENDS_KEY].read(request.app[CONFIG_KEY].ward, patient, span)
    except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
        _log.error("reading trends failed: %s", exc)
        return _error(503, "the trend database cannot be read just now; live values are unaffected")
    return _json(result)


async def stream(request: web.Request) -> web.StreamResponse:
    """The ward's live stream, relayed from the alerting API (server-sent events)."""
    session = request[SESSION_KEY]
    app = request.app
    config = app[CONFIG_KEY]
    sessions = app[SESSIONS_KEY]
    url = f"{config.alerting.url}/api/v1/wards/{config.ward}/stream"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.alerting.timeout_s, sock_read=60)
    try:
        upstream_cm = app[HTTP_KEY].get(url, headers={"Authorization": f"Bearer {session.token}"}, timeout=timeout)
        upstream = await upstream_cm.__aenter__()
    except (aiohttp.ClientError, TimeoutError) as exc:
        _log.error("the alerting stream is unreachable: %s", exc)
        return _error(503, "the alarm service cannot be reached; the page retries by itself")
    try:
        if upstream.status != 200:
            if upstream.status == 401:
                sessions.end(session)
            return _error(upstream.status, "the alarm service refused the live stream")
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", **_SECURITY_HEADERS}
        )
        await response.prepare(request)
        reader = upstream.content
        while True:
            try:
                async with asyncio.timeout(_SESSION_CHECK_S):
                    chunk = await reader.readany()
            except TimeoutError:
                chunk = None
            if app[STOPPING_KEY].is_set() or request.transport is None or request.transport.is_closing():
                break  # the console is stopping, or the browser went away
            if sessions.expired(session) or sessions.get(session.sid) is None:
                with contextlib.suppress(ConnectionResetError, TimeoutError):
                    async with asyncio.timeout(RELAY_WRITE_TIMEOUT_S):
                        await response.write(b'event: logout\ndata: {"reason": "inactivity"}\n\n')
                break
            if chunk is None:
                continue
            if not chunk:  # the alerting service ended the stream; the browser reconnects
                break
            async with asyncio.timeout(RELAY_WRITE_TIMEOUT_S):
                await response.write(chunk)
    except (ConnectionResetError, aiohttp.ClientError):
        pass  # the browser or the alarm service went away; the browser reconnects
    except TimeoutError:
        _log.warning("a browser stopped reading its live stream; it was disconnected")
    finally:
        await upstream_cm.__aexit__(None, None, None)
    return response


relay = _relay  # for route modules (wardwatch.console.handover)
id_param = _id


# -- the application -----------------------------------------------------------------------------


def _ssl_for_alerting(config: ConsoleConfig) -> ssl.SSLContext | bool:
    if config.alerting.ca_file is None:
        return True
    return ssl.create_default_context(cafile=str(config.alerting.ca_file))


async def _sweep(app: web.Application) -> None:
    """End expired sessions at the alerting API too, now and then."""
    while True:
        await asyncio.sleep(5)
        for session in app[SESSIONS_KEY].sweep():
            await _end_upstream(app, session)


def build_app(config: ConsoleConfig, *, clock: Callable[[], float] = time.monotonic) -> web.Application:
    """The console's aiohttp application."""
    app = web.Application(middlewares=[_security], client_max_size=64 * 1024)
    app[CONFIG_KEY] = config
    app[SESSIONS_KEY] = SessionStore(config.idle_logout_s, config.session_max_s, clock)

    async def clients(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(ssl=_ssl_for_alerting(config), limit=200)
        timeout = aiohttp.ClientTimeout(total=config.alerting.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            app[HTTP_KEY] = http
            app[TRENDS_KEY] = TrendReader(config.influx, http)
            sweeper = asyncio.create_task(_sweep(app), name="console-session-sweep")
            yield
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    app.cleanup_ctx.append(clients)
    app[STOPPING_KEY] = asyncio.Event()

    async def stop_streams(app: web.Application) -> None:
        app[STOPPING_KEY].set()  # relayed streams end within a second

    app.on_shutdown.append(stop_streams)
    router = app.router
    router.add_get("/", index)
    router.add_get("/healthz", healthz)
    router.add_get("/api/config", client_config)
    router.add_post("/api/login", login)
    router.add_get("/api/session", current_session)
    router.add_post("/api/activity", activity)
    router.add_post("/api/logout", logout)
    router.add_get("/api/board", board)
    router.add_get("/api/stream", stream)
    router.add_get("/api/alarms", alarms)
    router.add_get("/api/alarms/{alarm_id}", alarm)
    router.add_post("/api/alarms/{alarm_id}/{action}", alarm_action)
    router.add_get("/api/audit", audit)
    router.add_get("/api/patients/{patient}/thresholds", thresholds)
    router.add_get("/api/patients/{patient}/trends", trends)
    from wardwatch.console import clinical  # here: these modules import this one
    from wardwatch.console.admission import add_admission_routes
    from wardwatch.console.handover import add_handover_routes

    add_admission_routes(router)
    add_handover_routes(router)
    clinical.add_routes(router)  # NEWS2, manual observations, per-patient thresholds
    router.add_static("/static/", STATIC_DIR, follow_symlinks=False, append_version=False)
    return app


@contextlib.asynccontextmanager
async def serve_console(config: ConsoleConfig) -> AsyncIterator[int]:
    """Serve the console (HTTPS if configured); yields the bound port."""
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        context: ssl.SSLContext | None = None
        if config.tls_cert is not None and config.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
        site = web.TCPSite(runner, config.host, config.port, ssl_context=context)
        await site.start()
        yield runner.addresses[0][1] if runner.addresses else config.port
    finally:
        await runner.cleanup()
