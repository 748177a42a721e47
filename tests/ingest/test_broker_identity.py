"""The broker binds sessions to user names: a gateway's credentials cannot take over ingest's session.

Issue 12 found that a gateway connecting with client id ``wardwatch-ingest`` made the broker close
ingest's connection and lose messages that gateways had already had acknowledged. Here two ingest
instances (each its own principal, ``ingest`` and ``ingest-2``, on one shared subscription) store a
steady stream from gateway ``gw-00`` while gateway ``gw-01`` keeps connecting with their client ids.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from wardwatch.core.broker import Site, write_site
from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.mqtt import MqttClient
from wardwatch.core.servers import Influxd, Mosquitto, wait_for
from wardwatch.ingest.bench import make_stream
from wardwatch.ingest.testing import TIMEOUT, count, ingest_config, publish_kits_for, running_ingest

MESSAGES = 1500
TAKEOVER_IDS = ("wardwatch-ingest", "ingest", "ingest-2", "wardwatch-ingest-2")


def settings(broker: Mosquitto, user: str, users: dict[str, str]) -> MqttSettings:
    return MqttSettings(
        host=broker.host, port=broker.port, tls=False, username=user, password=Secret(users[user]), keepalive_s=5
    )


async def test_another_principal_cannot_take_over_ingest_and_nothing_is_lost(tmp_path: Path, influxd: Influxd) -> None:
    site = Site(gateways={"gw-00": "ward-a", "gw-01": "ward-a"}, instances={"ingest-2": "ingest"})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    messages, samples = make_stream(MESSAGES, 1, start_ms=time.time_ns() // 1_000_000 - 600_000)
    async with Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker:
        assert "use_username_as_clientid true" in broker.config_path.read_text()
        documents = await asyncio.to_thread(publish_kits_for, broker, messages, user="alerting")
        one = ingest_config(broker, influxd, user="ingest", client_id="wardwatch-ingest", share_group="ingest")
        two = ingest_config(broker, influxd, user="ingest-2", client_id="wardwatch-ingest-2", share_group="ingest")
        async with (
            running_ingest(one) as first,
            running_ingest(two) as second,
            MqttClient(settings(broker, "gw-00", users), "gw-00", clean_start=True) as gateway,
        ):
            await gateway.wait_connected(TIMEOUT)
            attempts = 0
            stream_done = asyncio.Event()

            async def take_over() -> None:
                nonlocal attempts
                while not stream_done.is_set():
                    for client_id in TAKEOVER_IDS:
                        async with MqttClient(settings(broker, "gw-01", users), client_id) as attacker:
                            await attacker.wait_connected(TIMEOUT)  # accepted, but as session "gw-01"
                            attempts += 1

            async def publish() -> None:
                try:
                    for topic, payload in messages:
                        await gateway.publish(topic, payload)  # PUBACKed: the broker owns it now
                finally:
                    stream_done.set()

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(take_over())
                tasks.create_task(publish())

            async def stored() -> bool:
                return await count(influxd) == samples

            await wait_for(stored, 60, what=f"{samples} samples stored")
            await wait_for(lambda: first.in_flight == second.in_flight == 0, TIMEOUT, what="all acknowledged")
            assert attempts >= len(TAKEOVER_IDS)
            # neither ingest connection was ever closed by the broker
            assert (first.subscriber.connects, second.subscriber.connects) == (1, 1)
            assert (first.subscriber.generation, second.subscriber.generation) == (1, 1)
            received = (first.metrics.value("messages_received_total"), second.metrics.value("messages_received_total"))
        assert sum(received) == len(messages) + 2 * len(documents)  # each instance reads every registry document
        assert min(received) > len(documents), f"the broker did not split the stream between the instances: {received}"
    assert await count(influxd) == samples
