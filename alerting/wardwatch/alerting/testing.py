"""Test and benchmark helpers: a real webhook receiver and a scriptable condition source.

:class:`WebhookReceiver` is an aiohttp server on a free loopback port that records every page
POSTed to it (with arrival time and ``Idempotency-Key``), deduplicates on that key as a real
receiver should, and can be told to fail (HTTP 500) to exercise retries and fail-over.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import msgspec
from aiohttp import web

from wardwatch.alerting.events import ConditionChange
from wardwatch.alerting.rules import RuleSet
from wardwatch.core.schema import DataGap, DeviceStatus, GatewayStatus, Vitals


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver accepted."""

    path: str
    idempotency_key: str | None
    body: dict[str, Any]
    received_ns: int  # time.time_ns() at arrival
    duplicate: bool


@dataclass
class WebhookReceiver:
    """A webhook endpoint on ``127.0.0.1``; ``url(path)`` gives its address. An async context manager."""

    fail_status: int | None = None  # answer every request with this status while set
    requests: list[Received] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 0
    _keys: set[str] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/page") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://{self.host}:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        now = time.time_ns()
        if self.fail_status is not None:
            return web.Response(status=self.fail_status, text="failing on purpose")
        body: dict[str, Any] = msgspec.json.decode(await request.read())
        key = request.headers.get("Idempotency-Key")
        duplicate = key is not None and key in self._keys
        if key is not None:
            self._keys.add(key)
        self.requests.append(Received(request.path, key, body, now, duplicate))
        self._arrived.set()
        return web.json_response({"status": "duplicate" if duplicate else "accepted"}, status=202)

    def unique(self, path: str | None = None) -> list[Received]:
        """Accepted requests that were not duplicates (optionally only to ``path``)."""
        return [r for r in self.requests if not r.duplicate and (path is None or r.path == path)]


class ScriptedSource:
    """A :class:`~wardwatch.alerting.service.ConditionSource` with a fixed threshold rule, for tests.

    ``spo2_low`` raises when an SpO2 sample is below ``limit`` and clears when one is at or above
    it; no delay, no hysteresis (the real engine has both). ``pushed`` collects condition changes
    injected with :meth:`push`, returned at the next call.
    """

    def __init__(self, limit: float = 90.0) -> None:
        self.limit = limit
        self._active: set[tuple[str, str]] = set()
        self._pending: list[ConditionChange] = []
        self.rules: RuleSet | None = None

    def push(self, change: ConditionChange) -> None:
        """Emit ``change`` at the next call."""
        self._pending.append(change)

    def _take(self) -> list[ConditionChange]:
        pending, self._pending = self._pending, []
        return pending

    def on_vitals(self, message: Vitals, ward: str) -> Sequence[ConditionChange]:
        """Threshold on SpO2."""
        from wardwatch.core.schema import AlarmCategory, Priority, Signal

        changes = self._take()
        if message.signal != Signal.SPO2:
            return changes
        for sample in message.samples:
            if sample.v is None:
                continue
            key = (ward, message.patient)
            low = sample.v < self.limit
            if low != (key in self._active):
                if low:
                    self._active.add(key)
                else:
                    self._active.discard(key)
                changes.append(
                    ConditionChange(
                        patient=message.patient,
                        ward=ward,
                        rule="spo2_low",
                        category=AlarmCategory.PHYSIOLOGICAL,
                        priority=Priority.HIGH,
                        active=low,
                        t=sample.t,
                        value=sample.v,
                        text=f"SpO2 {sample.v:g} % below {self.limit:g} %" if low else "",
                    )
                )
        return changes

    def on_device_status(self, message: DeviceStatus, ward: str) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def on_gateway_availability(self, ward: str, gateway: str, online: bool, t: int) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def on_data_gap(self, message: DataGap, ward: str) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def on_gateway_status(self, msg: GatewayStatus) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def tick(self, now_ms: int) -> Sequence[ConditionChange]:
        """Nothing but injected changes."""
        return self._take()

    def set_rules(self, rules: RuleSet) -> None:
        """Record the rule set pushed by the service (thresholds changed through the API)."""
        self.rules = rules
