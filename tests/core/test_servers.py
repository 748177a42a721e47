"""The real-server harness (wardwatch.core.servers) and the fixtures built on it.

MQTT clients are paho-mqtt 2 (MQTT v5) with their own network thread; their callbacks record into
plain lists and dicts, and the tests wait for those with ``wait_for`` (never a bare sleep).
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from wardwatch.core import servers
from wardwatch.core.errors import ServerStartError, WaitTimeoutError, WardwatchError
from wardwatch.core.servers import Influxd, Mosquitto, MqttEndpoint, make_ca_and_server_cert
from wardwatch.core.waiting import wait_for

TIMEOUT = 10.0


class Mqtt:
    """A paho-mqtt 2 MQTT v5 client whose callbacks record what the broker sent."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
    ) -> None:
        self.endpoint = endpoint
        self.clean_start = clean_start
        self.session_expiry = session_expiry
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,  # tests reconnect explicitly; a lost connection ends the loop
        )
        if endpoint.username is not None:
            self.client.username_pw_set(endpoint.username, endpoint.password)
        if endpoint.ca_file is not None:
            self.client.tls_set(
                ca_certs=str(endpoint.ca_file),
                certfile=str(endpoint.certfile) if endpoint.certfile else None,
                keyfile=str(endpoint.keyfile) if endpoint.keyfile else None,
            )
        # Written by paho's thread, read by the test (single appends/stores are atomic).
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.messages: list[mqtt.MQTTMessage] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.append(msg)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.pubacks.__setitem__(mid, rc)
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self.subacks.__setitem__(mid, rcs)
        self._thread: threading.Thread | None = None

    def _on_connect(self, _c: mqtt.Client, _u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, _p: Any) -> None:
        self.session_present = flags.session_present
        self.connack = rc

    def _connect_blocking(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry
        self.client.connect(
            self.endpoint.host,
            self.endpoint.port,
            keepalive=30,
            clean_start=self.clean_start,
            properties=props,
        )
        deadline = time.monotonic() + TIMEOUT
        while self.connack is None and time.monotonic() < deadline:
            self.client.loop(timeout=0.05)  # returns as soon as a packet arrives
        # Refused: the broker closes the connection; let paho read that and close its socket.
        while self.connack is not None and self.connack.is_failure and self.client.socket() is not None:
            if time.monotonic() > deadline:
                break
            self.client.loop(timeout=0.05)

    async def connect(self) -> ReasonCode:
        """Connect and return the CONNACK reason; if accepted, paho's loop runs in a thread."""
        await asyncio.to_thread(self._connect_blocking)
        assert self.connack is not None, "no CONNACK"
        if not self.connack.is_failure:
            # loop_forever in our own thread, not loop_start: that would leak the socket pair
            # that loop() made above.
            self._thread = threading.Thread(target=self.client.loop_forever, daemon=True)
            self._thread.start()
        return self.connack

    async def close(self) -> None:
        """Disconnect (keeping a persistent session) and wait for paho's thread to end."""
        if self._thread is not None:
            self.client.disconnect()
            await asyncio.to_thread(self._thread.join, TIMEOUT)
            assert not self._thread.is_alive()
            self._thread = None

    async def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK."""
        _, mid = self.client.subscribe(topic, qos=qos)
        assert mid is not None
        await wait_for(lambda: mid in self.subacks, TIMEOUT, what=f"SUBACK for {topic}")
        return self.subacks[mid]

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> ReasonCode:
        """Publish with QoS 1 and return the PUBACK reason."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        await wait_for(lambda: info.mid in self.pubacks, TIMEOUT, what=f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    async def message(self, topic: str) -> mqtt.MQTTMessage:
        """Wait for the first message received on ``topic``."""
        await wait_for(lambda: any(m.topic == topic for m in self.messages), TIMEOUT, what=topic)
        return next(m for m in self.messages if m.topic == topic)

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]


@asynccontextmanager
async def connected(endpoint: MqttEndpoint, client_id: str, **options: Any) -> AsyncIterator[Mqtt]:
    """A connected :class:`Mqtt` client, closed at the end."""
    client = Mqtt(endpoint, client_id, **options)
    try:
        rc = await client.connect()
        assert not rc.is_failure, f"{client_id}: CONNACK {rc}"
        yield client
    finally:
        await client.close()


# --- helpers ------------------------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = servers.free_port()
    with socket.socket() as sock:
        sock.bind((servers.LOOPBACK, port))


async def test_wait_for_accepts_plain_and_async_predicates() -> None:
    calls: list[int] = []

    def third_call() -> bool:
        calls.append(1)
        return len(calls) >= 3

    async def ready() -> bool:
        return True

    await wait_for(third_call, TIMEOUT)
    await wait_for(ready, TIMEOUT)
    assert len(calls) == 3


async def test_wait_for_times_out_with_a_wardwatch_error() -> None:
    with pytest.raises(WaitTimeoutError, match="never") as caught:
        await wait_for(lambda: False, 0.01, what="never")
    assert isinstance(caught.value, WardwatchError)
    assert isinstance(caught.value, TimeoutError)


async def test_tls_material_verifies_both_ways_for_localhost_and_loopback(tmp_path: Path) -> None:
    tls = make_ca_and_server_cert(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca_cert))
    server_ctx.load_cert_chain(str(tls.server_cert), str(tls.server_key))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=str(tls.ca_cert))
    client_ctx.load_cert_chain(str(tls.client_cert), str(tls.client_key))
    peers: list[Any] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        writer.write(b"ok")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    async with server:
        port = server.sockets[0].getsockname()[1]
        for name in ("localhost", "127.0.0.1"):  # checked against the SAN by the client
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=name)
            assert await reader.read() == b"ok"
            writer.close()
            await writer.wait_closed()
    assert [dict(p["subject"][0])["commonName"] for p in peers] == ["wardwatch-test-client"] * 2
    assert tls.server_key.stat().st_mode & 0o077 == 0


# --- mosquitto ----------------------------------------------------------------------------------


async def test_publish_subscribe_qos1(mosquitto: Mosquitto) -> None:
    topic = "wardwatch/v1/vitals/ward-a/gw-01/p-0001"
    async with (
        connected(mosquitto.endpoint(), "sub") as sub,
        connected(mosquitto.endpoint(), "pub") as pub,
    ):
        assert [rc.value for rc in await sub.subscribe("wardwatch/v1/#")] == [1]  # granted QoS 1
        assert (await pub.publish(topic, b'{"hr": 72}')).getName() == "Success"
        msg = await sub.message(topic)
    assert (msg.payload, msg.qos) == (b'{"hr": 72}', 1)
    assert mosquitto.url == f"mqtt://127.0.0.1:{mosquitto.port}"


async def test_acl_limits_each_gateway_to_its_own_topics(secure_mosquitto: Mosquitto) -> None:
    own = "wardwatch/v1/vitals/ward-a/gw-01/p-0001"
    foreign = "wardwatch/v1/vitals/ward-a/gw-02/p-0002"
    async with (
        connected(secure_mosquitto.endpoint("reader"), "reader") as reader,
        connected(secure_mosquitto.endpoint("gw-01"), "gw-01") as gw01,
    ):
        await reader.subscribe("wardwatch/v1/#")
        denied = await gw01.publish(foreign, b"spoofed")
        assert (denied.value, denied.getName()) == (135, "Not authorized")
        # The denied publish was decided (PUBACK) before this one was sent: once this one has
        # arrived, the other would have arrived first.
        assert (await gw01.publish(own, b"mine")).getName() == "Success"
        assert (await reader.message(own)).payload == b"mine"
        assert reader.topics() == [own]


async def test_wrong_password_and_anonymous_are_refused(secure_mosquitto: Mosquitto) -> None:
    good = secure_mosquitto.endpoint("gw-01")
    bad = MqttEndpoint(good.host, good.port, good.username, "wrong", ca_file=good.ca_file)
    anonymous = secure_mosquitto.endpoint()
    for endpoint in (bad, anonymous):
        client = Mqtt(endpoint, "intruder")
        try:
            rc = await client.connect()
        finally:
            await client.close()
        assert rc.is_failure
        assert rc.getName() == "Not authorized"  # mosquitto 2.0 answers this for a bad password too
    async with connected(good, "gw-01"):
        pass


async def _tls_handshake(port: int, ctx: ssl.SSLContext) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost")
    writer.close()
    await writer.wait_closed()


async def test_tls_refuses_a_client_that_does_not_trust_the_ca(secure_mosquitto: Mosquitto) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _tls_handshake(secure_mosquitto.port, ssl.create_default_context())
    assert secure_mosquitto.ca_file is not None
    await _tls_handshake(secure_mosquitto.port, ssl.create_default_context(cafile=secure_mosquitto.ca_file))
    assert secure_mosquitto.url.startswith("mqtts://")


@pytest.mark.servers
async def test_client_certificate_required(tmp_path: Path) -> None:
    async with Mosquitto(directory=tmp_path, require_client_cert=True) as broker:
        assert broker.ca_file is not None
        no_cert = ssl.create_default_context(cafile=broker.ca_file)
        no_cert.minimum_version = no_cert.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):  # TLS 1.2: the server checks the client during the handshake
            await _tls_handshake(broker.port, no_cert)
        async with connected(broker.endpoint(), "with-cert") as client:
            assert not (await client.publish("t", b"x")).is_failure  # "No matching subscribers"


@pytest.mark.servers
async def test_retained_and_queued_messages_survive_a_restart_with_persistence(tmp_path: Path) -> None:
    async with Mosquitto(directory=tmp_path, persistence=True) as broker:
        port = broker.port
        session = {"clean_start": False, "session_expiry": 3600}
        async with connected(broker.endpoint(), "ingest-1", **session) as sub:
            await sub.subscribe("wardwatch/v1/vitals/#")
        async with connected(broker.endpoint(), "gw-01") as pub:
            await pub.publish("wardwatch/v1/status/ward-a/gw-01", b"online", retain=True)
            await pub.publish("wardwatch/v1/vitals/ward-a/gw-01/p-1", b"queued")

        await broker.stop()
        assert not broker.running
        await broker.start()
        assert broker.port == port

        async with connected(broker.endpoint(), "ingest-1", **session) as sub:
            assert sub.session_present
            assert (await sub.message("wardwatch/v1/vitals/ward-a/gw-01/p-1")).payload == b"queued"
        async with connected(broker.endpoint(), "dashboard") as late:
            await late.subscribe("wardwatch/v1/status/#")
            retained = await late.message("wardwatch/v1/status/ward-a/gw-01")
            assert (retained.payload, retained.retain) == (b"online", True)


async def test_without_persistence_a_restart_forgets_retained_messages(mosquitto: Mosquitto) -> None:
    async with connected(mosquitto.endpoint(), "gw-01") as pub:
        await pub.publish("wardwatch/v1/status/ward-a/gw-01", b"online", retain=True)
    await mosquitto.restart()
    async with (
        connected(mosquitto.endpoint(), "dashboard") as sub,
        connected(mosquitto.endpoint(), "marker") as marker,
    ):
        await sub.subscribe("wardwatch/v1/status/#")
        await marker.publish("wardwatch/v1/status/ward-a/marker", b"m")
        await sub.message("wardwatch/v1/status/ward-a/marker")  # a retained one would have come first
        assert sub.topics() == ["wardwatch/v1/status/ward-a/marker"]


async def test_kill_pause_and_start_again(mosquitto: Mosquitto) -> None:
    first_pid = mosquitto.pid
    await mosquitto.kill()
    assert (mosquitto.running, mosquitto.pid) == (False, None)
    await mosquitto.start()
    assert mosquitto.pid not in (None, first_pid)
    mosquitto.pause()
    await mosquitto.stop()  # a paused server still stops gracefully
    assert not mosquitto.running
    assert "terminating" in mosquitto.log_text()


@pytest.mark.servers
async def test_start_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    broker = Mosquitto(directory=tmp_path, extra_config="no_such_option true")
    with pytest.raises(ServerStartError, match=r"(?s)exited with status.*no_such_option"):
        await broker.start()
    assert not broker.running


@pytest.mark.servers
async def test_missing_binary_says_to_run_setup(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="not found: run scripts/setup"):
        async with Mosquitto(directory=tmp_path, binary="wardwatch-no-such-mosquitto"):
            pass


@pytest.mark.servers
async def test_a_port_taken_at_first_start_is_replaced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        real_free_port = servers.free_port
        ports = iter([taken])
        monkeypatch.setattr(servers, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port())
        async with Mosquitto(directory=tmp_path / "retry") as broker:
            assert broker.port != taken
        with pytest.raises(ServerStartError, match=r"(?i)address already in use"):
            async with Mosquitto(directory=tmp_path / "fixed", port=taken):
                pass


# --- influxd ------------------------------------------------------------------------------------

LINES = (
    'vitals,device=d-01,patient=p-0001,ward=ward-a hr=72i,spo2=97.5,quality="good",valid=true'
    " 1700000000000000001\n"
    'vitals,device=d-01,patient=p-0001,ward=ward-a hr=73i,spo2=96.25,quality="fair",valid=false'
    " 1700000000123456789\n"
)
EXPECTED = [
    {
        "time": 1700000000000000001,
        "device": "d-01",
        "hr": 72,
        "patient": "p-0001",
        "quality": "good",
        "spo2": 97.5,
        "valid": True,
        "ward": "ward-a",
    },
    {
        "time": 1700000000123456789,
        "device": "d-01",
        "hr": 73,
        "patient": "p-0001",
        "quality": "fair",
        "spo2": 96.25,
        "valid": False,
        "ward": "ward-a",
    },
]


async def _select_all(http: aiohttp.ClientSession, db: str) -> list[dict[str, Any]]:
    params = {"db": db, "epoch": "ns", "q": "SELECT * FROM vitals ORDER BY time"}
    async with http.get("/query", params=params) as response:
        assert response.status == 200
        body = await response.json()
    series = body["results"][0]["series"][0]
    return [dict(zip(series["columns"], row, strict=True)) for row in series["values"]]


async def test_influxd_write_and_query_exact_values(influxd: Influxd) -> None:
    async with aiohttp.ClientSession(influxd.url) as http:
        async with http.post("/query", params={"q": "CREATE DATABASE vitals_test"}) as response:
            assert response.status == 200
        params = {"db": "vitals_test", "precision": "ns"}
        async with http.post("/write", params=params, data=LINES.encode()) as response:
            assert response.status == 204
        assert await _select_all(http, "vitals_test") == EXPECTED


@pytest.mark.parametrize("outage", ["stop", "kill"])
async def test_influxd_keeps_its_data_across_stop_or_kill(influxd: Influxd, outage: str) -> None:
    url = influxd.url
    await influxd.create_database("vitals_test")
    async with aiohttp.ClientSession(url) as http:
        params = {"db": "vitals_test", "precision": "ns"}
        async with http.post("/write", params=params, data=LINES.encode()) as response:
            assert response.status == 204
    await (influxd.stop() if outage == "stop" else influxd.kill())
    assert not influxd.running
    await influxd.start()
    assert influxd.url == url
    async with aiohttp.ClientSession(url) as http:
        assert await _select_all(http, "vitals_test") == EXPECTED


@pytest.mark.servers
async def test_influxd_with_auth(tmp_path: Path) -> None:
    async with (
        Influxd(directory=tmp_path, auth=("admin", "s3cr'et")) as server,
        aiohttp.ClientSession(server.url) as http,
    ):
        async with http.get("/query", params={"q": "SHOW DATABASES"}) as response:
            assert response.status == 401
        auth = {"Authorization": "Basic " + base64.b64encode(b"admin:s3cr'et").decode()}
        async with http.get("/query", params={"q": "SHOW DATABASES"}, headers=auth) as response:
            assert response.status == 200
        await server.restart()  # the admin user is kept, not made again
        assert (await server.query("SHOW USERS"))["results"][0]["series"][0]["values"] == [["admin", True]]
