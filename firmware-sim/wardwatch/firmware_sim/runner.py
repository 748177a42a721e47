"""Live mode: a scenario's devices on a radio, sending the model's readings in real time (or faster).

:func:`play` drives one device from its track: each second it applies the link faults of that
second (out of range, busy, battery off), then notifies the reading and any spot-check; a cuff or
thermometer takes its scheduled reading (kept on the device until a gateway connects). With
``speed`` > 1 the clock is compressed (``speed=60``: a minute per second) for fast tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from .devices import HeartRateStrap, PulseOximeter, SimulatedDevice, make_device
from .model import OximeterTrack, StrapTrack, Track, simulate
from .radio import Radio
from .scenario import Scenario
from .spot_check import SpotCheckDevice
from .spot_track import SpotTrack

__all__ = ["LiveScenario", "play", "running_scenario"]

_log = logging.getLogger(__name__)


async def play(
    device: SimulatedDevice,
    track: Track,
    *,
    t0: float,
    speed: float = 1.0,
    on_sent: Callable[[int, bool], None] | None = None,
) -> None:
    """Send ``track`` through ``device``: notification ``i`` at loop time ``t0 + (i + 1) / speed``."""
    loop = asyncio.get_running_loop()
    spots = {s.index: s for s in track.spot_checks} if isinstance(track, OximeterTrack) else {}
    readings = {r.index: r for r in track.readings} if isinstance(track, SpotTrack) else {}
    in_range, busy, powered = True, False, True
    for i in range(track.seconds):
        delay = t0 + (i + 1) / speed - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        if powered and not track.powered[i]:
            powered = False
            await device.power_off()
        if not powered:
            continue
        now_in_range = bool(track.in_range[i])
        if now_in_range != in_range:
            in_range = now_in_range
            await (device.come_back() if in_range else device.go_out_of_range())
        now_busy = bool(track.busy[i])
        if now_busy != busy:
            busy = now_busy
            await device.set_busy(busy)
        if isinstance(device, HeartRateStrap) and isinstance(track, StrapTrack):
            sent = await device.send(track.reading(i))
        elif isinstance(device, PulseOximeter) and isinstance(track, OximeterTrack):
            sent = await device.send(track.reading(i))
            spot = spots.get(i)
            if spot is not None:
                await device.spot_check(spot)
        elif isinstance(device, SpotCheckDevice) and isinstance(track, SpotTrack):
            reading = readings.get(i)
            sent = reading is not None  # taken and stored: delivered when a gateway connects
            if reading is not None:
                await device.record(reading)
        else:  # pragma: no cover - make_device pairs kinds correctly
            raise TypeError(f"{type(device).__name__} cannot play {type(track).__name__}")
        if on_sent is not None:
            on_sent(i, sent)


@dataclass
class LiveScenario:
    """A running scenario: its (re-timed) scenario, tracks and devices by device id."""

    scenario: Scenario
    tracks: list[Track]
    devices: dict[str, SimulatedDevice] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    t0: float = 0.0  # loop time of the scenario start (reading i is due at t0 + (i + 1) / speed)


@contextlib.asynccontextmanager
async def running_scenario(
    scenario: Scenario,
    radio: Radio,
    *,
    speed: float = 1.0,
    wall_clock: bool = True,
    advertising_interval_ms: float = 100.0,
    start_delay: float = 0.0,
    tracks: Sequence[Track] | None = None,
    go: asyncio.Event | None = None,
) -> AsyncIterator[LiveScenario]:
    """Power the scenario's devices on ``radio`` and play their tracks while the context is open.

    With ``wall_clock`` the scenario starts now (so reading times and ground truth match the wall
    clock at ``speed`` 1). ``start_delay`` seconds pass between advertising and the first reading
    (time for a central to connect). Leaving the context stops everything; ``live.done`` is set
    when every track has played out. With ``go`` the first reading waits for that event instead
    (``live.t0`` is then the loop time it was set, plus ``start_delay``).
    """
    if wall_clock:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=start_delay)
        scenario = msgspec.structs.replace(scenario, start=now)
        tracks = None
    live = LiveScenario(scenario, list(tracks) if tracks is not None else simulate(scenario))
    async with contextlib.AsyncExitStack() as stack:
        for track in live.tracks:
            device = make_device(track.device, radio, advertising_interval_ms=advertising_interval_ms)
            live.devices[track.device.id] = await stack.enter_async_context(device)
            live.sent[track.device.id] = 0
        loop = asyncio.get_running_loop()

        async def run_all() -> None:
            if go is not None:
                await go.wait()
            t0 = live.t0 = loop.time() + start_delay
            async with asyncio.TaskGroup() as group:
                for track in live.tracks:
                    did = track.device.id

                    def count(_i: int, sent: bool, did: str = did) -> None:
                        live.sent[did] += sent

                    group.create_task(
                        play(live.devices[did], track, t0=t0, speed=speed, on_sent=count), name=f"play-{did}"
                    )
            live.done.set()

        player = asyncio.create_task(run_all(), name="scenario-player")
        try:
            yield live
        finally:
            player.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await player
