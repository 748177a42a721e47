"""Paging channels against real servers (aiohttp webhook receiver, aiosmtpd, mosquitto) and the pager's fail-over."""

from __future__ import annotations

import asyncio
import email
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiosmtpd.controller import Controller

from wardwatch.alerting.paging import Pager, build_channel, pagerduty_event
from wardwatch.alerting.paging.channels import Channel
from wardwatch.alerting.settings import ChannelConfig, PagingConfig
from wardwatch.alerting.store import Store
from wardwatch.alerting.testing import WebhookReceiver
from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.schema import Page, Priority, decode
from wardwatch.core.servers import Mosquitto, free_port
from wardwatch.core.topics import page_topic
from wardwatch.core.waiting import wait_for

TIMEOUT = 10.0
FAST = PagingConfig(attempts_per_channel=2, backoff_min_s=0.01, backoff_max_s=0.05, round_backoff_max_s=0.1)


class SmtpSink:
    """aiosmtpd handler that keeps every message it receives."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd hook name
        with self.lock:
            self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpSink, int]]:
    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink, port
    finally:
        controller.stop()


def make_page(step: int = 0) -> Page:
    return Page(
        page_id=f"a-1.r0.s{step}",
        alarm_id="a-1",
        dedup_key="ward-a/p-1/spo2_low",
        patient="p-1",
        ward="ward-a",
        priority=Priority.HIGH,
        destination="primary-nurse",
        step=step,
        t=1_700_000_000_000,
        text="SpO2 84 % below 90 % for 15 s",
    )


def channel_config(data: dict[str, Any]) -> ChannelConfig:
    def secret(type_: type[Any], obj: Any) -> Any:
        if type_ is Secret:
            return Secret(obj)
        raise NotImplementedError

    config: ChannelConfig = msgspec.convert(data, ChannelConfig, dec_hook=secret)
    return config


async def run_pager(
    tmp_path: Path,
    configs: list[dict[str, Any]],
    page: Page,
    *,
    mqtt: MqttClient | None = None,
    until_delivered: bool = True,
) -> tuple[Store, list[Page]]:
    store = Store(tmp_path / "alerting.db")
    undeliverable: list[Page] = []
    async with aiohttp.ClientSession() as session:
        channels: list[Channel] = [
            build_channel(i, channel_config(c), session=session, publisher=mqtt) for i, c in enumerate(configs)
        ]
        async with Pager(
            store, {("ward-a", "primary-nurse"): channels}, FAST, on_undeliverable=undeliverable.append
        ) as pager:
            store.commit(pages=[page])
            pager.submit([page])
            if until_delivered:
                await asyncio.wait_for(pager.wait_idle(), TIMEOUT)
            else:
                await wait_for(lambda: bool(undeliverable), TIMEOUT, what="undeliverable callback")
    return store, undeliverable


async def test_webhook_posts_page_json_with_idempotency_key(tmp_path: Path, receiver: WebhookReceiver) -> None:
    store, _ = await run_pager(tmp_path, [{"type": "webhook", "url": receiver.url()}], make_page())
    (got,) = receiver.requests
    assert got.idempotency_key == "a-1.r0.s0"
    assert decode(msgspec.json.encode(got.body)) == make_page()
    (row,) = store.outbox()
    assert (row.status, row.channel, row.attempts) == ("delivered", "webhook:0", 1)
    assert [e.action for e in store.audit_entries()] == ["page_delivered"]
    store.close()


async def test_pagerduty_shape(tmp_path: Path, receiver: WebhookReceiver) -> None:
    config = {"type": "pagerduty", "url": receiver.url("/v2/enqueue"), "routing_key": "R0UT1NGKEY"}
    store, _ = await run_pager(tmp_path, [config], make_page())
    (got,) = receiver.requests
    assert got.path == "/v2/enqueue"
    assert got.body == pagerduty_event(make_page(), "R0UT1NGKEY")
    assert got.body["event_action"] == "trigger"
    assert got.body["dedup_key"] == "a-1/primary-nurse"
    assert got.body["payload"]["severity"] == "critical"
    assert got.idempotency_key == "a-1.r0.s0"
    store.close()


async def test_smtp_sends_mail(tmp_path: Path, smtp: tuple[SmtpSink, int]) -> None:
    sink, port = smtp
    config = {"type": "smtp", "host": "127.0.0.1", "port": port, "to": ["ward-a-nurses@example.org"]}
    store, _ = await run_pager(tmp_path, [config], make_page())
    (mail,) = sink.messages
    assert mail["X-Wardwatch-Page-Id"] == "a-1.r0.s0"
    assert "HIGH" in mail["Subject"]
    assert "p-1" in mail["Subject"]
    assert mail["To"] == "ward-a-nurses@example.org"
    store.close()


async def test_mqtt_channel_publishes_to_page_topic(tmp_path: Path, mosquitto: Mosquitto) -> None:
    settings = MqttSettings(host=mosquitto.host, port=mosquitto.port, tls=False)
    async with MqttClient(settings, "nurse-app", clean_start=True) as app, MqttClient(settings, "pager") as mqtt:
        await app.wait_connected(TIMEOUT)
        await mqtt.wait_connected(TIMEOUT)
        await app.subscribe(page_topic("ward-a", "+"))
        store, _ = await run_pager(tmp_path, [{"type": "mqtt"}], make_page(), mqtt=mqtt)
        message = await asyncio.wait_for(app.get_message(), TIMEOUT)
    assert message.topic == page_topic("ward-a", "primary-nurse")
    assert decode(message.payload) == make_page()
    store.close()


async def test_failing_channel_fails_over_to_next(
    tmp_path: Path, receiver: WebhookReceiver, smtp: tuple[SmtpSink, int]
) -> None:
    sink, port = smtp
    receiver.fail_status = 503
    configs: list[dict[str, Any]] = [
        {"type": "webhook", "url": receiver.url()},
        {"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/nobody-listens", "timeout_s": 1},
        {"type": "smtp", "host": "127.0.0.1", "port": port, "to": ["charge@example.org"]},
    ]
    store, undeliverable = await run_pager(tmp_path, configs, make_page())
    assert len(sink.messages) == 1
    assert undeliverable == []
    (row,) = store.outbox()
    assert (row.status, row.channel, row.attempts) == ("delivered", "smtp:2", 5)  # 2 + 2 failed, then 1
    store.close()


async def test_all_channels_failing_calls_failsafe_and_keeps_retrying(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.fail_status = 500
    store = Store(tmp_path / "alerting.db")
    undeliverable: list[Page] = []
    async with aiohttp.ClientSession() as session:
        channel = build_channel(
            0, channel_config({"type": "webhook", "url": receiver.url()}), session=session, publisher=None
        )
        async with Pager(
            store, {("ward-a", "primary-nurse"): [channel]}, FAST, on_undeliverable=undeliverable.append
        ) as pager:
            store.commit(pages=[make_page()])
            pager.submit([make_page()])
            await wait_for(lambda: bool(undeliverable), TIMEOUT, what="failsafe callback")
            receiver.fail_status = None  # the receiver recovers: the page still gets through
            await asyncio.wait_for(pager.wait_idle(), TIMEOUT)
    assert undeliverable == [make_page()]
    assert len(receiver.unique()) == 1
    assert [e.action for e in store.audit_entries()] == ["page_undeliverable", "page_delivered"]
    store.close()
