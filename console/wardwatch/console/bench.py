"""``wardwatch console bench``: the ward board with many patients in Chromium; prints JSON.

The console runs as in production and relays a synthetic alerting API (login, the ward's snapshot and
its server-sent-events stream, in this process) that holds ``--patients`` patients with readings.
Debian's Chromium (driven by Playwright, a dev dependency) logs in, then the bench measures:

* ``first_render_ms``: from the navigation start of a reload (already logged in) to every tile on
  the board (modules loaded, session checked, stream connected, snapshot drawn);
* ``update_all_ms``: from a ``values`` event that changes every patient's heart rate leaving the
  synthetic API to the new value shown on the last tile (through the console's relay);
* ``alarm_to_tile_ms``: from an ``alarm`` event (high priority) leaving the API to its tile turning red.

The real alerting service coalesces reading changes for :data:`wardwatch.alerting.live.FLUSH_S`
(0.25 s) before sending them; that wait is not part of these figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from wardwatch.console.app import serve_console
from wardwatch.console.config import AlertingSettings, ConsoleConfig
from wardwatch.core.servers import free_port

__all__ = ["main"]

WARD: Final = "ward-bench"
CHROMIUM_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
_RENDER_HOOK: Final = """
window.__allTilesAt = null;
new MutationObserver(() => {
  if (window.__allTilesAt === null && document.querySelectorAll("a.tile").length >= %d) {
    window.__allTilesAt = performance.now();
  }
}).observe(document, { subtree: true, childList: true });
"""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _patient(i: int, t: int, hr: float = 72.0) -> dict[str, Any]:
    pid = f"p-{i:04d}"
    reading = {"t": t, "device": f"{pid}-hrs", "absent": None, "quality": []}
    return {
        "patient": pid,
        "gateway": f"gw-{i:04d}",
        "vitals": {
            "heart_rate": {**reading, "value": hr},
            "spo2": {**reading, "value": 96.0, "device": f"{pid}-ox"},
            "pulse_rate": {**reading, "value": hr, "device": f"{pid}-ox"},
        },
        "devices": {
            f"{pid}-hrs": {"device": f"{pid}-hrs", "role": "heart_rate_strap", "connected": True, "battery": 80},
            f"{pid}-ox": {"device": f"{pid}-ox", "role": "pulse_oximeter", "connected": True, "battery": 64},
        },
    }


def _alarm(i: int, n: int, t: int) -> dict[str, Any]:
    return {
        "alarm_id": f"a-bench-{n}",
        "dedup_key": f"{WARD}/p-{i:04d}/spo2_low_severe",
        "ward": WARD,
        "patient": f"p-{i:04d}",
        "rule": "spo2_low_severe",
        "category": "physiological",
        "priority": "high",
        "state": "active",
        "started": t,
        "updated": t,
        "value": 76.0,
        "text": "SpO2 76 % below 80 %",
        "actor": None,
        "condition_active": True,
        "escalation": {"round": 0, "step": 0, "next_step_at": t + 60_000},
        "acknowledged_at": None,
        "silenced_until": None,
        "renotify_at": None,
        "resolved_at": None,
        "pages": 1,
        "flaps": 0,
    }


class SyntheticAlerting:
    """Just enough of the alerting API for the console: login, the ward snapshot and its event stream."""

    def __init__(self, patients: int) -> None:
        self.patients = patients
        self.streams: list[asyncio.Queue[bytes]] = []

    def snapshot(self) -> dict[str, Any]:
        now = _now_ms()
        gateways = [{"gateway": f"gw-{i:04d}", "online": True, "t": now} for i in range(self.patients)]
        return {
            "ward": WARD,
            "now": now,
            "patients": [_patient(i, now) for i in range(self.patients)],
            "gateways": gateways,
            "alarms": [],
        }

    def send(self, event: str, data: dict[str, Any]) -> None:
        """One event to every open stream."""
        chunk = f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()
        for queue in self.streams:
            queue.put_nowait(chunk)

    async def login(self, request: web.Request) -> web.Response:
        return web.json_response({"token": "wwt_bench", "token_type": "Bearer", "expires": 0, "role": "charge_nurse"})

    async def live(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def alarms(self, request: web.Request) -> web.Response:
        return web.json_response({"alarms": []})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams.append(queue)
        try:
            await response.write(f"event: snapshot\ndata: {json.dumps(self.snapshot())}\n\n".encode())
            while request.transport is not None and not request.transport.is_closing():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await response.write(await queue.get())
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.streams.remove(queue)
        return response

    @contextlib.asynccontextmanager
    async def serve(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_post("/api/v1/login", self.login)
        app.router.add_post("/api/v1/logout", self.alarms)
        app.router.add_get(f"/api/v1/wards/{WARD}/live", self.live)
        app.router.add_get(f"/api/v1/wards/{WARD}/stream", self.stream)
        app.router.add_get("/api/v1/alarms", self.alarms)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            yield f"http://127.0.0.1:{runner.addresses[0][1]}"
        finally:
            await runner.cleanup()


def _summary(values: list[float]) -> dict[str, float | int]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1),
        "max": round(ordered[-1], 1),
    }


async def run_bench(patients: int, rounds: int, chromium: str) -> dict[str, Any]:
    """Measure the board (see the module) and return the figures."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        raise SystemExit("wardwatch console bench: needs playwright (pip install -e '.[dev]')") from None
    upstream = SyntheticAlerting(patients)
    async with upstream.serve() as api_url:
        config = ConsoleConfig(ward=WARD, port=free_port(), idle_logout_s=3600, alerting=AlertingSettings(url=api_url))
        async with serve_console(config) as port, async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                await context.add_init_script(_RENDER_HOOK % patients)
                page = await context.new_page()
                await page.goto(f"http://127.0.0.1:{port}/")
                await page.get_by_label("User name").fill("bench")
                await page.get_by_label("Password").fill("bench-password")
                await page.get_by_role("button", name="Log in").click()
                await page.wait_for_function(f"() => document.querySelectorAll('a.tile').length >= {patients}")
                await page.reload()
                await page.wait_for_function("() => window.__allTilesAt !== null", timeout=120_000)
                first_render = float(await page.evaluate("window.__allTilesAt"))
                last = f"p-{patients - 1:04d}"
                updates: list[float] = []
                for n in range(rounds):
                    hr = 40 + n % 100
                    sent = _now_ms()
                    upstream.send(
                        "values",
                        {"now": sent, "patients": [_patient(i, sent, hr) for i in range(patients)], "gateways": []},
                    )
                    seen = await page.wait_for_function(
                        f"""() => {{
                          const v = document.querySelector('a.tile[data-patient="{last}"] [data-signal=heart_rate]');
                          return v && v.querySelector('.vital-value').textContent.startsWith('{hr}') ? Date.now() : 0;
                        }}""",
                        polling="raf",
                    )
                    updates.append(float(await seen.json_value()) - sent)
                alarms: list[float] = []
                for n in range(rounds):
                    index = (n * 37) % patients
                    sent = _now_ms()
                    upstream.send("alarm", _alarm(index, n, sent))
                    seen = await page.wait_for_function(
                        f"""() => document.querySelector('a.tile[data-patient="p-{index:04d}"][data-level="high"]')
                              ? Date.now() : 0""",
                        polling="raf",
                    )
                    alarms.append(float(await seen.json_value()) - sent)
                    resolved = {**_alarm(index, n, sent), "state": "resolved", "resolved_at": _now_ms()}
                    upstream.send("alarm", resolved)
                    await page.wait_for_function(
                        f"""() => !document.querySelector('a.tile[data-patient="p-{index:04d}"][data-level="high"]')""",
                        polling="raf",
                    )
                version = browser.version
            finally:
                await browser.close()
    return {
        "bench": "console_board",
        "patients": patients,
        "rounds": rounds,
        "chromium": version,
        "first_render_ms": round(first_render, 1),
        "update_all_ms": _summary(updates),
        "alarm_to_tile_ms": _summary(alarms),
        "note": "synthetic alerting API in process; the real one coalesces readings for 0.25 s before sending",
    }


def main(argv: list[str]) -> int:
    """Entry point of ``wardwatch console bench``."""
    parser = argparse.ArgumentParser(prog="wardwatch console bench", description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    parser.add_argument(
        "--sessions-under-load",
        type=int,
        default=0,
        metavar="N",
        help="instead: page latency of the real alerting service with --patients streaming and N console sessions' "
        "streams open vs closed (runs `wardwatch bench alerting --skip-replay --console-sessions N`)",
    )
    args = parser.parse_args(argv)
    if args.sessions_under_load > 0:  # the alerting part owns the service and the load: run its benchmark
        command = [sys.executable, "-m", "wardwatch.core", "bench", "alerting", "--skip-replay"]
        command += ["--patients", str(args.patients), "--console-sessions", str(args.sessions_under_load)]
        return subprocess.run([*command, "--spread-s", "40"], check=False).returncode
    result = asyncio.run(run_bench(args.patients, args.rounds, args.chromium))
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0
