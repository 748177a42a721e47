"""Server push for the console: a ward's live board as server-sent events, and its snapshot.

``GET /api/v1/wards/{ward}/live`` returns the board (latest values per patient and device, gateway
state, open alarms). ``GET /api/v1/wards/{ward}/stream`` is a ``text/event-stream``: first a
``snapshot`` event, then ``values`` (coalesced reading changes) and ``alarm`` (one alarm's new state)
events, and a comment line every :data:`HEARTBEAT_S` seconds. Both need ``read_alarms``.

A slow or stalled client never slows the alarm engine: events wait in a bounded per-client buffer
(:class:`~wardwatch.alerting.live.Subscription`); a client whose buffer fills, or whose socket does
not take a write within :data:`WRITE_TIMEOUT_S`, is disconnected and counted
(``wardwatch_alerting_live_dropped``). An ``EventSource`` reconnects by itself and gets a new snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import msgspec
from aiohttp import web

from wardwatch.alerting.live import LiveBoard

__all__ = ["HEARTBEAT_S", "LIVE_KEY", "WRITE_TIMEOUT_S", "install", "ward_snapshot", "ward_stream"]

_log = logging.getLogger(__name__)

LIVE_KEY: Final = web.AppKey("live", LiveBoard)
HEARTBEAT_S: Final = 15.0
WRITE_TIMEOUT_S: Final = 10.0
_STREAMS_KEY: Final = web.AppKey("live_streams", set[asyncio.Task[Any]])


def install(app: web.Application, live: LiveBoard) -> None:
    """Give the API app the live board; its streams end when the app shuts down."""
    app[LIVE_KEY] = live
    app[_STREAMS_KEY] = set()

    async def end_streams(_: web.Application) -> None:
        live.close()

    app.on_shutdown.append(end_streams)


def _live_ward(request: web.Request) -> tuple[LiveBoard, str]:
    live = request.app[LIVE_KEY]
    ward = request.match_info["ward"]
    if ward not in live.wards:
        problem = f"no such ward here (this service has: {', '.join(live.wards)})"
        raise web.HTTPNotFound(text=msgspec.json.encode({"error": problem}).decode(), content_type="application/json")
    return live, ward


async def ward_snapshot(request: web.Request) -> web.Response:
    """The ward's board now: patients (latest readings, devices), gateways, open alarms."""
    live, ward = _live_ward(request)
    return web.Response(body=msgspec.json.encode(live.snapshot(ward, encoded=True)), content_type="application/json")


async def ward_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events of the ward's board (see the module); ends when the client is too slow."""
    live, ward = _live_ward(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not buffer the stream
        }
    )
    subscription = live.subscribe(ward)
    timed_out = False
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.prepare(request)
            await response.write(b"retry: 2000\n\n")
        while True:
            batch = await subscription.next_batch(HEARTBEAT_S)
            if subscription.overflowed or (subscription.closed and not batch):
                break  # too slow (counted by the board), or the service is stopping
            chunk = b"".join(batch) if batch else b": heartbeat\n\n"
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await response.write(chunk)
    except TimeoutError:
        timed_out = True
    except ConnectionResetError:
        pass  # the client went away
    finally:
        # one slow client is counted once: a write that timed out after the buffer filled is the same client
        live.unsubscribe(subscription, "write_timeout" if timed_out and not subscription.overflowed else None)
    if timed_out or subscription.overflowed:
        _log.warning("live stream of ward %s cut off: the client does not keep up", ward)
    return response
