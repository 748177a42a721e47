"""The gateway service: device sessions -> durable queue -> MQTT, with status and availability.

:class:`Gateway` owns everything in an ``AsyncExitStack`` and a ``TaskGroup``::

    sessions (one per bound device) --Recorder--> DurableQueue --Publisher--> MQTT (QoS 1)
    status loop: GatewayStatus every status_interval_s, DeviceStatus of each device
    capacity: devices waiting for a connection slot are in the status, the metrics and one log line
    kit: the registry's retained kit (own topic) binds and releases sessions without a restart (gateway.kit)
    availability: retained "online" at every connect; last will and clean shutdown: "offline"
    systemd: READY=1 once the queue is open, WATCHDOG=1 while the loop and the queue are healthy
    metrics: Prometheus ``/metrics`` on ``[metrics] host:port`` when a port is set
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from wardwatch.core.mqtt import MqttClient, MqttError, Will
from wardwatch.core.registry import kit_topic
from wardwatch.core.schema import GatewayStatus, encode
from wardwatch.core.topics import AVAILABILITY_OFFLINE, AVAILABILITY_ONLINE, availability_topic, gateway_status_topic
from wardwatch.gateway.ble import DeviceSession, Radio, default_recovery
from wardwatch.gateway.clock import clock_synchronised
from wardwatch.gateway.config import DeviceBinding, GatewayConfig
from wardwatch.gateway.kit import KitState, kit_path
from wardwatch.gateway.publisher import Publisher
from wardwatch.gateway.queue import DurableQueue
from wardwatch.gateway.readings import DeviceDecoder, Recorder, device_clock_zone
from wardwatch.gateway.sdnotify import notify, watchdog_interval

__all__ = ["Gateway", "run"]

_log = logging.getLogger(__name__)
COMMIT_STALL_S: Final = 120.0  # no successful commit for this long while data waits: stop the watchdog pings
CAPACITY_SETTLE_S: Final = 5.0  # the waiting list must hold still this long before it is logged


def _version() -> str:
    try:
        return version("wardwatch")
    except PackageNotFoundError:
        return "unknown"


class Gateway:
    """One gateway process; ``await Gateway(config).run()`` until cancelled."""

    def __init__(
        self,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        client_kwargs: dict[str, Any] | None = None,
        scanner_kwargs: dict[str, Any] | None = None,
        recover: Callable[[], Awaitable[None]] | None = None,
        use_default_recovery: bool = True,
        commit_stall_s: float = COMMIT_STALL_S,
        capacity_settle_s: float = CAPACITY_SETTLE_S,
    ) -> None:
        self.config = config
        self._clock = clock
        self._client_kwargs = client_kwargs
        self._scanner_kwargs = scanner_kwargs
        self._recover = (
            recover if recover is not None or not use_default_recovery else default_recovery(config.ble.adapter)
        )
        self.started = time.monotonic()
        self.queue: DurableQueue | None = None
        self.mqtt: MqttClient | None = None
        self.publisher: Publisher | None = None
        self.radio: Radio | None = None
        self.recorder: Recorder | None = None
        self.sessions: list[DeviceSession] = []
        self.ready = asyncio.Event()
        self.commit_stall_s = commit_stall_s
        self.capacity_settle_s = capacity_settle_s
        self.capacity_logged = 0  # devices waiting for a slot as last logged
        self.healthy = True  # the last watchdog check's verdict
        self.watchdog_pings = 0
        self.watchdog_withheld = 0
        self._last_commits = 0
        self._last_commit_progress = time.monotonic()
        self.kit = KitState(config.ward, config.gateway_id, kit_path(config.queue.path))
        self.kit_topic = kit_topic(config.ward, config.gateway_id)
        self.kits_applied = 0  # kits taken from MQTT (tests, logs)
        self._session_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: asyncio.TaskGroup | None = None

    @property
    def availability_topic(self) -> str:
        """This gateway's retained online/offline topic."""
        return availability_topic(self.config.ward, self.config.gateway_id)

    async def run(self) -> None:
        """Run until cancelled; on the way out say ``offline`` and commit the queue."""
        config = self.config
        async with contextlib.AsyncExitStack() as stack:
            queue = self.queue = await stack.enter_async_context(
                DurableQueue(
                    config.queue.path,
                    max_messages=config.queue.max_messages,
                    commit_interval_s=config.queue.commit_interval_s,
                    commit_batch=config.queue.commit_batch,
                    clock=self._clock,
                )
            )
            client = MqttClient(
                config.mqtt,
                config.mqtt.client_id or config.gateway_id,
                will=Will(self.availability_topic, AVAILABILITY_OFFLINE, qos=1, retain=True),
                max_inflight=0,  # the publisher bounds in-flight publishes; paho's bound costs O(n) per PUBACK
                on_connect=self._online,
            )
            client.add_subscription(self.kit_topic, qos=1, retained=True)  # its kit, at every (re)connect
            mqtt = self.mqtt = await stack.enter_async_context(client)
            stack.push_async_callback(self._offline)
            recorder = self.recorder = Recorder(
                queue, gateway=config.gateway_id, ward=config.ward, batch=config.queue.batch_vitals
            )
            radio = self.radio = Radio(
                config.ble,
                recover=self._recover,
                client_kwargs=self._client_kwargs,
                scanner_kwargs=self._scanner_kwargs,
            )
            self._zone = device_clock_zone(config.device_timezone)
            if self.kit.load() is not None:
                recorder.patient_at = self.kit.patient_at
                bindings = list(self.kit.current_bindings().values())
            else:
                bindings = list(config.devices)  # the offline fallback until a kit arrives
            self.sessions = [self._session(binding) for binding in bindings]
            self.publisher = Publisher(
                queue, mqtt, gateway=config.gateway_id, ward=config.ward, in_flight=config.queue.in_flight
            )
            _log.info(
                "gateway %s (ward %s) starting: %d bound devices, queue %s holding %d messages",
                config.gateway_id,
                config.ward,
                len(self.sessions),
                config.queue.path,
                queue.depth,
            )
            if config.metrics.port:
                from wardwatch.gateway.metrics import gateway_registry, serve_metrics

                registry = gateway_registry(self, device_labels=config.metrics.device_labels, clock=self._clock)
                await stack.enter_async_context(serve_metrics(registry, config.metrics.host, config.metrics.port))
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self.publisher.run(), name="publisher")
                for session in self.sessions:
                    self._start(session)
                tasks.create_task(self._kit_loop(mqtt), name="kit")
                tasks.create_task(self._stop_sessions_on_exit(), name="sessions-stop")
                tasks.create_task(self._status_loop(), name="status")
                tasks.create_task(self._watchdog_loop(), name="watchdog")
                tasks.create_task(self._capacity_loop(radio), name="capacity")
                self.ready.set()
                notify("READY=1")

    # -- the kit: bind and release sessions ---------------------------------------------------------

    def _session(self, binding: DeviceBinding) -> DeviceSession:
        assert self.radio is not None
        assert self.recorder is not None
        return DeviceSession(
            binding,
            self.radio,
            self.recorder,
            decoder=DeviceDecoder(binding, self.recorder, clock=self._clock, device_zone=self._zone),
            clock=self._clock,
        )

    def _start(self, session: DeviceSession) -> None:
        assert self._tasks is not None
        self._session_tasks[session.binding.id] = self._tasks.create_task(
            session.run(), name=f"session-{session.binding.id}"
        )

    async def _stop_sessions_on_exit(self) -> None:
        """When the gateway stops, stop every session too (see :meth:`DeviceSession.stop`: cancel is not enough)."""
        try:
            await asyncio.Event().wait()
        finally:
            for session in self.sessions:
                session.stop()

    async def _kit_loop(self, mqtt: MqttClient) -> None:
        async for message in mqtt.messages():
            if message.topic == self.kit_topic and self.kit.accept(message.payload):
                self.kits_applied += 1
                await self.apply_kit()

    async def apply_kit(self) -> None:
        """Make the sessions match the kit in force: release ended or changed bindings, bind new ones."""
        assert self.recorder is not None
        assert self.kit.kit is not None
        self.recorder.patient_at = self.kit.patient_at
        wanted = self.kit.current_bindings()
        for session in list(self.sessions):
            if wanted.get(session.binding.id) != session.binding:
                await self._release(session)
        running = {session.binding.id for session in self.sessions}
        for device_id, binding in wanted.items():
            if device_id not in running:
                session = self._session(binding)
                self.sessions.append(session)
                self._start(session)
                _log.info("kit: bound device %s (%s) to patient %s", device_id, binding.role, binding.patient)
        _log.info(
            "kit revision %d in force: %d bound devices (%s)",
            self.kit.revision,
            len(self.sessions),
            ", ".join(sorted(wanted)) or "none",
        )

    async def _release(self, session: DeviceSession) -> None:
        """Stop a session (disconnecting its device) and forget it."""
        session.stop(released=True)
        task = self._session_tasks.pop(session.binding.id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.sessions.remove(session)
        _log.info("kit: released device %s (patient %s)", session.binding.id, session.binding.patient)

    # -- availability ----------------------------------------------------------------------------

    def _online(self) -> None:
        if self.mqtt is None:
            return
        future = self.mqtt.publish_nowait(self.availability_topic, AVAILABILITY_ONLINE, qos=1, retain=True)
        future.add_done_callback(_consume)

    async def _offline(self) -> None:
        notify("STOPPING=1")
        if self.mqtt is None or not self.mqtt.is_connected:
            return
        with contextlib.suppress(MqttError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.mqtt.publish(self.availability_topic, AVAILABILITY_OFFLINE, qos=1, retain=True)

    # -- status ----------------------------------------------------------------------------------

    def gateway_status(self) -> GatewayStatus:
        """The current health report."""
        queue = self.queue
        return GatewayStatus(
            gateway=self.config.gateway_id,
            ward=self.config.ward,
            t=int(self._clock() * 1000),
            uptime_s=round(time.monotonic() - self.started, 3),
            devices=tuple(session.link() for session in self.sessions),
            queue_depth=queue.depth if queue else 0,
            queue_capacity=self.config.queue.max_messages,
            dropped_total=queue.dropped_total if queue else 0,
            dead_lettered_total=queue.dead_lettered_total if queue else 0,
            clock_synced=clock_synchronised(),
            version=_version(),
            connection_slots=self.config.ble.max_connections,
            waiting_for_slot=self.waiting_for_slot(),
        )

    def waiting_for_slot(self) -> tuple[str, ...]:
        """Bound devices (ids, sorted) in sight that cannot connect because every slot is in use."""
        return tuple(sorted(self.radio.waiting)) if self.radio is not None else ()

    async def _status_loop(self) -> None:
        topic = gateway_status_topic(self.config.ward, self.config.gateway_id)
        while True:
            await asyncio.sleep(self.config.status_interval_s)
            for session in self.sessions:
                session.recorder.device_status(session.status(session.idle_reason()))  # durable, like readings
            if self.mqtt is not None and self.mqtt.is_connected:
                # Live health, not data: not queued; skipped while the broker is away.
                self.mqtt.publish_nowait(topic, encode(self.gateway_status()), qos=1).add_done_callback(_consume)

    async def _capacity_loop(self, radio: Radio) -> None:
        """Log the waiting list once it has settled, and again only when its size changes."""
        while True:
            await radio.capacity_changed.wait()
            while radio.capacity_changed.is_set():  # sessions reach the slots one by one: wait for quiet
                radio.capacity_changed.clear()
                await asyncio.sleep(self.capacity_settle_s)
            waiting = self.waiting_for_slot()
            if len(waiting) == self.capacity_logged:
                continue
            slots = self.config.ble.max_connections
            if waiting:
                _log.warning(
                    "%d bound %s cannot connect: all %d connection slots are in use (waiting: %s); "
                    "bind at most %d continuous devices to gateway %s and move the others to another gateway",
                    len(waiting),
                    "device" if len(waiting) == 1 else "devices",
                    slots,
                    ", ".join(waiting),
                    slots,
                    self.config.gateway_id,
                )
            else:
                _log.info("every bound device in sight has a connection slot again (%d slots)", slots)
            self.capacity_logged = len(waiting)

    async def _watchdog_loop(self) -> None:
        interval = watchdog_interval()
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval / 3)
            self.healthy = self.queue_healthy()
            if self.healthy:
                notify("WATCHDOG=1")
                self.watchdog_pings += 1
            else:
                self.watchdog_withheld += 1
                _log.error("queue commits are stalled: withholding the systemd watchdog ping")

    def queue_healthy(self) -> bool:
        """False once queue commits have failed for ``commit_stall_s`` without one succeeding."""
        queue = self.queue
        if queue is None:
            return False
        if queue.commits != self._last_commits or queue.last_commit_error is None:
            self._last_commits = queue.commits
            self._last_commit_progress = time.monotonic()
            return True
        return time.monotonic() - self._last_commit_progress < self.commit_stall_s


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve a fire-and-forget publish's outcome (so asyncio does not warn) and log failures."""
    if not future.cancelled() and (exc := future.exception()) is not None:
        _log.warning("status publish failed: %s", exc)


async def run(config: GatewayConfig, **kwargs: Any) -> None:
    """Run a gateway until cancelled."""
    await Gateway(config, **kwargs).run()
