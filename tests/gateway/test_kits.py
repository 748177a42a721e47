"""Kits over MQTT (issue 12): the registry's retained kit binds and releases devices without a restart.

Simulated wearables (bumble, through the simulator's bleak backend) -> an unmodified gateway logged in as
its own principal on the site's broker (it may read only its own kit topic) -> ingest, which enforces
provenance with the same documents -> InfluxDB. The registry's documents are published here as the
registry does: retained, QoS 1, as the ``alerting`` principal.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.gateway.harness import FAST_BLE
from tests.gateway.harness import running_gateway as gateway_on_sim_radio

from wardwatch.core import gatt
from wardwatch.core.broker import Site, write_site
from wardwatch.core.config import MqttSettings
from wardwatch.core.registry import GatewayKit, KitDevice, WardManifest, encode_document, kit_from_bindings
from wardwatch.core.schema import DeviceRole, GatewayStatus, Signal, decode
from wardwatch.core.servers import Influxd, Mosquitto, free_port
from wardwatch.core.waiting import wait_for
from wardwatch.firmware_sim.bleak_backend import BleakArguments, BumbleCentral, bleak_arguments
from wardwatch.firmware_sim.devices import HeartRateStrap, SimulatedDevice, make_device
from wardwatch.firmware_sim.model import HeartRateReading
from wardwatch.firmware_sim.radio import SimRadio
from wardwatch.firmware_sim.scenario import DeviceKind, DeviceSpec
from wardwatch.gateway.app import Gateway
from wardwatch.gateway.config import BleSettings, DeviceBinding, GatewayConfig, QueueSettings
from wardwatch.gateway.kit import KitState, kit_path
from wardwatch.ingest.testing import count, ingest_config, publish_registry, running_ingest

TIMEOUT = 20.0
#: bleak's ``backend=`` arguments of the simulated central that :func:`simulated_straps` made (bleak's own
#: backend selection, no patching); :func:`running_gateway` passes them to the gateway.
_BACKEND: contextvars.ContextVar[BleakArguments] = contextvars.ContextVar("simulated_central")
WARD = "ward-a"
GATEWAY = "gw-01"
SettingsFor = Callable[..., MqttSettings]
Collect = Callable[..., Any]  # tests/gateway/conftest.py: collecting()


#: what the test's collector may read (not the registry: its documents are not wire messages)
READER_ACL = tuple(f"topic read wardwatch/v1/{kind}/#" for kind in ("vitals", "device", "gateway"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def simulated_straps(n: int) -> AsyncIterator[list[HeartRateStrap]]:
    radio = SimRadio()
    async with contextlib.AsyncExitStack() as stack:
        straps = []
        for k in range(n):
            spec = DeviceSpec(kind=DeviceKind.HEART_RATE_STRAP, id=f"hr-{7 + k}", name=f"HR {7 + k}", serial=f"SN{k}")
            device = await stack.enter_async_context(make_device(spec, radio, advertising_interval_ms=50))
            assert isinstance(device, HeartRateStrap)
            straps.append(device)
        central = await stack.enter_async_context(BumbleCentral(radio))
        token = _BACKEND.set(bleak_arguments(central))  # the gateways started inside this block use this central
        try:
            yield straps
        finally:
            _BACKEND.reset(token)


@asynccontextmanager
async def simulated_strap() -> AsyncIterator[HeartRateStrap]:
    async with simulated_straps(1) as (strap,):
        yield strap


def running_gateway(config: GatewayConfig) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """The gateway on the simulated central that :func:`simulated_straps` made."""
    return gateway_on_sim_radio(config, _BACKEND.get())


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """The site's broker: users and ACL of ``wardwatch broker init`` with gateway gw-01 in ward-a (and a reader)."""
    site = Site(gateways={GATEWAY: WARD}, extra_users={"reader": READER_ACL})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    async with Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker:
        yield broker


def gateway_config(settings: MqttSettings, tmp_path: Path, ble: BleSettings = FAST_BLE) -> GatewayConfig:
    """No ``[[devices]]``: the gateway binds only what its kit says."""
    return GatewayConfig(
        gateway_id=GATEWAY,
        ward=WARD,
        mqtt=settings,
        ble=ble,
        queue=QueueSettings(path=tmp_path / "gateway" / "queue.sqlite3", commit_interval_s=0.05),
        status_interval_s=0.5,
    )


def strap_binding(strap: SimulatedDevice, patient: str, since: int, until: int | None = None) -> KitDevice:
    return KitDevice(
        id=strap.spec.id,
        patient=patient,
        role=DeviceRole.HEART_RATE_STRAP,
        since=since,
        until=until,
        address=strap.address,
    )


async def assign(broker: Mosquitto, revision: int, *devices: KitDevice) -> GatewayKit:
    """What the registry publishes on an assignment: the gateway's kit, then the ward's manifest."""
    kit = kit_from_bindings(WARD, GATEWAY, revision, now_ms(), devices)
    manifest = WardManifest(ward=WARD, issued_at=now_ms(), gateways={GATEWAY: revision})
    await asyncio.to_thread(publish_registry, broker, [kit, manifest], user="alerting")
    return kit


def reading(i: int) -> HeartRateReading:
    return HeartRateReading(index=i, t_ms=0, heart_rate=60 + i, contact=True, rr_ticks=(), battery=90)


async def stored_heart_rates(influxd: Influxd, patient: str, expected: int) -> None:
    async def reached() -> bool:
        seen = await count(influxd, where=f"\"patient\" = '{patient}' AND \"signal\" = 'heart_rate'")
        assert seen <= expected
        return seen == expected

    await wait_for(reached, TIMEOUT, what=f"{expected} heart rates of {patient} stored")


def heart_rates(sub: Any) -> list[tuple[float | None, str]]:
    """(value, patient) of every heart-rate sample published."""
    return [(s.v, v.patient) for v in sub.vitals() if v.signal == Signal.HEART_RATE for s in v.samples]


async def test_a_kit_binds_swaps_and_releases_a_device_without_a_restart(
    site: Mosquitto, influxd: Influxd, tmp_path: Path, settings_for: SettingsFor, collect: Collect
) -> None:
    async with (
        simulated_strap() as strap,
        running_ingest(ingest_config(site, influxd, user="ingest")),
        collect(settings_for(site, "reader"), "wardwatch/v1/#") as sub,
        running_gateway(gateway_config(settings_for(site, GATEWAY), tmp_path)) as gateway,
    ):
        assert gateway.sessions == []  # nothing in the config, no kit yet
        admitted = now_ms()
        await assign(site, 1, strap_binding(strap, "p-a", admitted))
        await wait_for(lambda: bool(gateway.sessions) and gateway.sessions[0].connected, TIMEOUT, what="kit bound")
        await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
        for i in range(5):
            assert await strap.send(reading(i))
        await stored_heart_rates(influxd, "p-a", 5)
        assert gateway.kits_applied == 1

        # swap: the strap now belongs to p-b; from the moment of the swap its samples are p-b's
        swapped = now_ms()
        await assign(site, 2, strap_binding(strap, "p-a", admitted, swapped), strap_binding(strap, "p-b", swapped))
        await wait_for(
            lambda: [(s.binding.patient, s.connected) for s in gateway.sessions] == [("p-b", True)],
            TIMEOUT,
            what="the strap bound to p-b",
        )
        await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
        for i in range(5, 12):
            assert await strap.send(reading(i))
        await stored_heart_rates(influxd, "p-b", 7)

        def after_swap() -> list[tuple[float | None, str]]:
            return [(value, patient) for value, patient in heart_rates(sub) if value is not None and value >= 65]

        await wait_for(lambda: len(after_swap()) >= 7, TIMEOUT, what="p-b's readings published")
        assert after_swap() == [(60.0 + i, "p-b") for i in range(5, 12)]
        assert await count(influxd, where="\"patient\" = 'p-a' AND \"signal\" = 'heart_rate'") == 5

        # discharge: the kit ends the binding; the gateway disconnects and publishes nothing more for it
        ended = now_ms()
        await assign(
            site, 3, strap_binding(strap, "p-a", admitted, swapped), strap_binding(strap, "p-b", swapped, ended)
        )
        await wait_for(lambda: gateway.sessions == [] and not strap.is_connected, TIMEOUT, what="strap released")
        assert not await strap.send(reading(12)), "a released device is still subscribed"
        published = len(sub.vitals())
        status_topic = f"wardwatch/v1/gateway/{WARD}/{GATEWAY}/status"
        statuses_before = len(sub.on(status_topic))

        def later_status_without_devices() -> bool:
            later = [decode(m.payload) for m in sub.on(status_topic)[statuses_before:]]
            return any(isinstance(status, GatewayStatus) and not status.devices for status in later)

        await wait_for(later_status_without_devices, TIMEOUT, what="a gateway status without the strap")
        assert len(sub.vitals()) == published
        assert gateway.kit.revision == 3


async def test_a_gateway_restarting_offline_binds_from_its_kept_kit(
    site: Mosquitto, tmp_path: Path, settings_for: SettingsFor
) -> None:
    async with simulated_strap() as strap:
        config = gateway_config(settings_for(site, GATEWAY), tmp_path)
        async with running_gateway(config) as gateway:
            await assign(site, 4, strap_binding(strap, "p-c", now_ms()))
            await wait_for(lambda: gateway.kit.revision == 4, TIMEOUT, what="kit taken")
        assert kit_path(config.queue.path).is_file()

        offline = gateway_config(settings_for(site, GATEWAY, port=free_port()), tmp_path)  # no broker there
        async with running_gateway(offline) as gateway:
            assert gateway.kit.revision == 4
            assert [s.binding.patient for s in gateway.sessions] == ["p-c"]
            await strap.wait_subscribed(gatt.HEART_RATE_MEASUREMENT, TIMEOUT)
            assert await strap.send(reading(0))
            assert gateway.queue is not None
            queue = gateway.queue

            async def queued() -> bool:
                await queue.flush()
                return any("/vitals/" in m.topic for m in await queue.read_after(0, 100))

            await wait_for(queued, TIMEOUT, what="a reading queued while offline")
            topics = {m.topic for m in await queue.read_after(0, 100) if "/vitals/" in m.topic}
            assert topics == {f"wardwatch/v1/vitals/{WARD}/{GATEWAY}/p-c/{strap.spec.id}/batch"}
            assert gateway.mqtt is not None
            assert not gateway.mqtt.is_connected


async def test_a_kit_over_capacity_still_reports_the_devices_waiting_for_a_slot(
    site: Mosquitto, tmp_path: Path, settings_for: SettingsFor
) -> None:
    """Issue 18's capacity report holds for kit-bound devices: two straps, one connection slot."""
    ble = msgspec.structs.replace(FAST_BLE, max_connections=1)
    async with (
        simulated_straps(2) as straps,
        running_gateway(gateway_config(settings_for(site, GATEWAY), tmp_path, ble)) as gateway,
    ):
        since = now_ms()
        await assign(site, 1, *(strap_binding(strap, f"p-{k}", since) for k, strap in enumerate(straps)))
        await wait_for(
            lambda: sum(s.connected for s in gateway.sessions) == 1 and len(gateway.waiting_for_slot()) == 1,
            TIMEOUT,
            what="one strap connected, the other waiting for the slot",
        )
        waiting = gateway.waiting_for_slot()
        assert gateway.gateway_status().waiting_for_slot == waiting
        assert set(waiting) < {strap.spec.id for strap in straps}


async def test_the_config_devices_hold_until_a_kit_replaces_them(
    site: Mosquitto, tmp_path: Path, settings_for: SettingsFor
) -> None:
    async with simulated_strap() as strap:
        fallback = DeviceBinding(
            id=strap.spec.id, patient="p-toml", role=DeviceRole.HEART_RATE_STRAP, address=strap.address
        )
        config = msgspec.structs.replace(gateway_config(settings_for(site, GATEWAY), tmp_path), devices=(fallback,))
        async with running_gateway(config) as gateway:
            await wait_for(lambda: bool(gateway.sessions) and gateway.sessions[0].connected, TIMEOUT, what="bound")
            assert gateway.sessions[0].binding.patient == "p-toml"
            assert gateway.kit.revision == -1
            await assign(site, 1, strap_binding(strap, "p-kit", now_ms()))
            await wait_for(
                lambda: [(s.binding.patient, s.connected) for s in gateway.sessions] == [("p-kit", True)],
                TIMEOUT,
                what="the kit's binding in force",
            )


def test_a_kit_replaces_the_one_in_force_only_with_a_higher_revision(tmp_path: Path) -> None:
    state = KitState(WARD, GATEWAY, tmp_path / "kit.json")
    assert state.load() is None
    one = KitDevice(id="hr-1", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, since=1, name="HR 1")
    assert state.accept(encode_document(kit_from_bindings(WARD, GATEWAY, 2, 1, [one])))
    assert not state.accept(encode_document(kit_from_bindings(WARD, GATEWAY, 1, 2, [])))  # older
    assert not state.accept(encode_document(kit_from_bindings(WARD, "gw-09", 5, 2, [])))  # another gateway's
    assert not state.accept(b"")  # a cleared retained message keeps the kit in force
    assert not state.accept(b"{not json")
    assert list(state.current_bindings()) == ["hr-1"]
    again = KitState(WARD, GATEWAY, tmp_path / "kit.json")
    loaded = again.load()
    assert loaded is not None
    assert (loaded.revision, again.patient_at("hr-1", 5)) == (2, "p-1")
