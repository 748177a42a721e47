"""Site credentials: least-privilege ACL per gateway and service, enforced by a real mosquitto."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from wardwatch.core.broker import SERVICE_ACL, Site, broker_main, write_site
from wardwatch.core.config import Secret
from wardwatch.core.mqtt import MqttClient, PublishRefusedError
from wardwatch.core.servers import Mosquitto


def test_write_site_is_idempotent_and_keeps_passwords(tmp_path: Path) -> None:
    site = Site(gateways={"gw-01": "ward-a"})
    first = write_site(tmp_path, site, tls=False)
    password = first.password("gw-01")
    again = write_site(tmp_path, Site(gateways={"gw-01": "ward-a", "gw-02": "ward-b"}), tls=False)
    assert again.password("gw-01") == password
    assert again.password("gw-02") != password
    assert stat.S_IMODE(again.credentials_file("gw-01").stat().st_mode) == 0o600
    acl = again.acl_file.read_text()
    assert "topic write wardwatch/v1/vitals/ward-b/gw-02/#" in acl
    assert "user ingest" in acl


def test_cli_rejects_gateway_without_ward(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert broker_main(["init", str(tmp_path), "--gateway", "gw-01"]) == 2
    assert "WARD/GATEWAY" in capsys.readouterr().err


def test_cli_writes_tls_site_with_a_certificate_for_the_broker_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    assert broker_main(["init", str(site), "--gateway", "ward-a/gw-01", "--host", "mqtt.example.org"]) == 0
    out = capsys.readouterr().out
    written = json.loads(out)
    assert Path(written["ca_file"]).exists()
    secret = tomllib.loads((site / "credentials" / "gw-01.toml").read_text())["mqtt"]["password"]
    assert secret not in out
    names = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(site / "tls" / "server.crt")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "DNS:mqtt.example.org" in names
    assert "DNS:localhost" in names


async def test_generated_acl_confines_each_principal(tmp_path: Path) -> None:
    site = Site(gateways={"gw-01": "ward-a", "gw-02": "ward-a"})
    files = write_site(tmp_path / "site", site, tls=False)
    users = {user: files.password(user) for user in site.users}
    async with Mosquitto(users=users, acl=site.acl_text(), directory=tmp_path / "broker") as broker:

        def client_for(user: str) -> MqttClient:
            endpoint = broker.endpoint(user).settings(password=Secret(users[user]))
            return MqttClient(endpoint, f"{user}-client")

        async with client_for("gw-01") as gateway, client_for("ingest") as ingest, client_for("nurse-app") as app:
            for client in (gateway, ingest, app):
                await client.wait_connected(10)
            await ingest.subscribe("wardwatch/v1/vitals/#")
            await app.subscribe("wardwatch/v1/vitals/#")  # granted, but the ACL withholds delivery
            own = "wardwatch/v1/vitals/ward-a/gw-01/p-1/d-1/spo2"
            await gateway.publish(own, b"own")
            for spoofed in ("wardwatch/v1/vitals/ward-a/gw-02/p-1/d-1/spo2", "wardwatch/v1/alarm/ward-a/p-1"):
                with pytest.raises(PublishRefusedError):
                    await gateway.publish(spoofed, b"spoofed")
            with pytest.raises(PublishRefusedError):
                await ingest.publish("wardwatch/v1/page/ward-a/primary-nurse", b"not ingest's job")
            received = await asyncio.wait_for(ingest.get_message(), 10)
            assert (received.topic, received.payload) == (own, b"own")
            await gateway.publish(own, b"second")
            assert (await asyncio.wait_for(ingest.get_message(), 10)).payload == b"second"
            assert app.get_message_nowait() is None  # the nurse app saw neither vitals message


def test_instances_get_their_service_acl_and_the_cli_adds_them(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert (
        broker_main(["init", str(site), "--no-tls", "--gateway", "ward-a/gw-01", "--instance", "ingest/ingest-2"]) == 0
    )
    acl = (site / "acl").read_text()
    block = acl.split("user ingest-2\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == list(SERVICE_ACL["ingest"])
    assert "user operator\ntopic read wardwatch/v1/deadletter/#" in acl
    assert (site / "credentials" / "ingest-2.toml").exists()


def test_an_instance_of_an_unknown_service_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert broker_main(["init", str(tmp_path), "--no-tls", "--instance", "ingset/ingest-2"]) == 2
    assert "unknown service 'ingset'" in capsys.readouterr().err
