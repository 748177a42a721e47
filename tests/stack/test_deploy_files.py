"""deploy/compose and deploy/grafana: the configs load with the services' own loaders, the dashboard's
InfluxQL runs against a real influxd. (The compose file itself needs a Docker engine; see its README.)"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wardwatch.alerting.rules import load_rules
from wardwatch.alerting.settings import load_alerting_config
from wardwatch.core.broker import Site, write_site
from wardwatch.core.config import Secret, load_config
from wardwatch.core.servers import Influxd
from wardwatch.ingest.config import IngestConfig

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose"
DASHBOARD = DEPLOY / "grafana" / "wardwatch-vitals.json"
ENV = {"WARDWATCH_MQTT__PASSWORD": "from-the-env", "WARDWATCH_INFLUX__TOKEN": "token-from-the-env"}


def test_compose_ingest_config_loads_as_v2_with_secrets_from_the_environment() -> None:
    config = load_config(IngestConfig, COMPOSE / "ingest.toml", environ=ENV)
    assert config.influx.api == "v2"
    assert config.influx.token == Secret("token-from-the-env")
    assert config.mqtt.password == Secret("from-the-env")
    assert (config.influx.org, config.influx.bucket) == ("wardwatch", "wardwatch")
    assert config.mqtt.tls
    assert config.metrics.port == 9464


def test_compose_ingest_config_needs_the_token() -> None:
    from wardwatch.core.errors import ConfigError

    with pytest.raises(ConfigError, match="token"):
        load_config(IngestConfig, COMPOSE / "ingest.toml", environ={})


def test_compose_alerting_config_and_mounted_rules_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDWATCH_MQTT__PASSWORD", "from-the-env")
    config = load_alerting_config(COMPOSE / "alerting.toml")
    assert set(config.wards) == {"ward-a", "ward-b"}
    assert config.mqtt.password == Secret("from-the-env")
    assert config.api.port == 8480
    for ward in config.wards.values():
        assert ward.failsafe in ward.destinations
    load_rules(DEPLOY / "alerting" / "rules.example.toml")  # mounted as /etc/wardwatch/rules.toml


def test_mosquitto_conf_matches_the_reference_but_for_paths() -> None:
    def settings(path: Path) -> dict[str, str]:
        lines = [line.split(None, 1) for line in path.read_text().splitlines() if line and not line.startswith("#")]
        return dict(lines)

    ours, reference = settings(COMPOSE / "mosquitto.conf"), settings(DEPLOY / "mosquitto" / "mosquitto.conf")
    assert set(ours) == set(reference)
    paths = {"password_file", "acl_file", "cafile", "certfile", "keyfile", "persistence_location", "log_dest"}
    assert {k: v for k, v in ours.items() if k not in paths} == {k: v for k, v in reference.items() if k not in paths}
    assert ours["max_queued_messages"] == "1000000"


def test_compose_file_mounts_what_exists() -> None:
    text = (COMPOSE / "compose.yaml").read_text()
    for source in re.findall(r"^\s*- (\.{1,2}/[^:]+):", text, flags=re.MULTILINE):
        if source.startswith("./broker/"):
            continue  # written by `wardwatch broker init ./broker` (checked below)
        assert (COMPOSE / source).exists(), source
    yaml = pytest.importorskip("yaml")
    compose: dict[str, Any] = yaml.safe_load(text)
    services = compose["services"]
    assert set(services) == {"mosquitto", "influxdb", "ingest", "alerting", "grafana"}
    for name, service in services.items():
        assert "healthcheck" in service, name
        assert service["restart"] == "unless-stopped", name
    assert services["ingest"]["depends_on"]["influxdb"]["condition"] == "service_healthy"


def test_make_env_reads_broker_init_credentials(tmp_path: Path) -> None:
    files = write_site(tmp_path / "broker", Site(gateways={"gw-0001": "ward-a"}), tls=False)
    work = tmp_path / "compose"
    work.mkdir()
    (work / ".env.example").write_text((COMPOSE / ".env.example").read_text())
    subprocess.run(
        ["sh", str(COMPOSE / "make-env.sh"), str(tmp_path / "broker"), "mqtt.ward.test"], cwd=work, check=True
    )
    env = dict(
        line.split("=", 1) for line in (work / ".env").read_text().splitlines() if line and not line.startswith("#")
    )
    assert env["INGEST_MQTT_PASSWORD"] == files.password("ingest")
    assert env["ALERTING_MQTT_PASSWORD"] == files.password("alerting")
    assert env["PROBE_MQTT_PASSWORD"] == files.password("healthcheck")
    assert env["MQTT_HOST"] == "mqtt.ward.test"
    assert len(env["INFLUX_TOKEN"]) == 64
    assert all(env[k] for k in ("INFLUX_ADMIN_PASSWORD", "GRAFANA_ADMIN_PASSWORD"))
    assert (work / ".env").stat().st_mode & 0o077 == 0


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_dashboard_shape() -> None:
    dashboard = _dashboard()
    (patient,) = dashboard["templating"]["list"]
    assert patient["name"] == "patient"
    assert patient["query"] == 'SHOW TAG VALUES FROM "vitals" WITH KEY = "patient"'
    queries = [t["query"] for p in dashboard["panels"] for t in p["targets"]]
    assert all('FROM "vitals"' in q or 'FROM "device_status"' in q for q in queries)
    signals = set(re.findall(r"\"signal\" = '([a-z0-9_]+)'", " ".join(queries)))
    assert signals == {
        "spo2",
        "heart_rate",
        "pulse_rate",
        "perfusion_index",
        "rr_interval",
        "systolic_bp",
        "diastolic_bp",
        "mean_arterial_pressure",
        "body_temperature",
    }
    lines = {
        p["title"]: [s["value"] for s in p["fieldConfig"]["defaults"]["thresholds"]["steps"]]
        for p in dashboard["panels"]
        if p["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
    }
    assert lines == {
        "SpO2": [None, 90],
        "Heart rate (strap) vs pulse rate (oximeter)": [None, 40, 130],
        "Blood pressure (cuff)": [None, 90],
        "Temperature (thermometer)": [None, 35.0, 39.1],
    }
    provisioned = (DEPLOY / "grafana" / "provisioning" / "datasources" / "wardwatch.yaml").read_text()
    assert all(p["datasource"]["uid"] in provisioned for p in dashboard["panels"])


async def test_dashboard_queries_run_against_influxd(influxd: Influxd) -> None:
    """Every panel's InfluxQL (Grafana's macros filled in) runs on points written as ingest writes them."""
    now = time.time_ns() // 1_000_000
    lines = [
        f'vitals,device=ox-1,patient=p-1,signal=spo2,ward=ward-a value=88.0,seq=1i,gateway="gw-01" {now - 3000}',
        f'vitals,device=ox-1,patient=p-1,signal=pulse_rate,ward=ward-a value=92.0,seq=1i,gateway="gw-01" {now - 3000}',
        f'vitals,device=ox-1,patient=p-1,signal=perfusion_index,ward=ward-a value=1.5,seq=1i,gateway="gw-01",'
        f'quality="low_perfusion" {now - 3000}',
        f'vitals,device=hr-1,patient=p-1,signal=heart_rate,ward=ward-a value=90.0,seq=1i,gateway="gw-01" {now - 2000}',
        f'vitals,device=hr-1,patient=p-1,signal=rr_interval,ward=ward-a value=0.66,seq=1i,gateway="gw-01" {now - 2000}',
        f'vitals,device=ox-1,patient=p-1,signal=spo2,ward=ward-a absent="nres",seq=2i,gateway="gw-01" {now - 1000}',
        f'vitals,device=bp-1,patient=p-1,signal=systolic_bp,ward=ward-a value=88.0,seq=1i,gateway="gw-01" {now - 900}',
        f'vitals,device=bp-1,patient=p-1,signal=diastolic_bp,ward=ward-a value=52.0,seq=2i,gateway="gw-01" {now - 900}',
        f'vitals,device=bp-1,patient=p-1,signal=mean_arterial_pressure,ward=ward-a value=64.0,seq=3i,gateway="gw-01" '
        f"{now - 900}",
        f'vitals,device=th-1,patient=p-1,signal=body_temperature,ward=ward-a value=38.4,seq=1i,gateway="gw-01" '
        f"{now - 900}",
        f'device_status,device=ox-1,patient=p-1,ward=ward-a connected=true,gateway="gw-01",role="pulse_oximeter",'
        f"seq=1i,battery=80i {now - 1000}",
    ]
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{influxd.url}/query", data={"q": "CREATE DATABASE wardwatch"}) as response:
            assert response.status == 200
        params = {"db": "wardwatch", "precision": "ms"}
        async with http.post(f"{influxd.url}/write", params=params, data="\n".join(lines)) as response:
            assert response.status == 204, await response.text()

        async def query(q: str) -> list[dict[str, Any]]:
            async with http.post(f"{influxd.url}/query", data={"db": "wardwatch", "q": q}) as response:
                body = await response.json()
            (result,) = body["results"]
            assert "error" not in result, (q, result)
            series: list[dict[str, Any]] = result.get("series", [])
            return series

        (tags,) = await query(_dashboard()["templating"]["list"][0]["query"])
        assert [v[1] for v in tags["values"]] == ["p-1"]
        for panel in _dashboard()["panels"]:
            for target in panel["targets"]:
                q = (
                    target["query"]
                    .replace("$timeFilter", "time > now() - 1h")
                    .replace("$__interval", "10s")
                    .replace("$patient", "p-1")
                )
                series = await query(q)
                values = [v for s in series for row in s["values"] for v in row[1:] if v not in (None, 0)]
                assert values, f"{panel['title']} / {target['refId']}: no data from {q}"


async def test_influxdb_setup_script_makes_write_only_and_read_only_users(tmp_path: Path) -> None:
    """``deploy/influxdb/setup-users.sh`` against a real influxd with auth on; run twice (idempotent)."""
    admin = ("admin", "adm'in\\pw")  # quoting is the script's job

    async def status(method: str, path: str, user: tuple[str, str] | None, **params: str) -> int:
        auth = {} if user is None else {"u": user[0], "p": user[1]}
        data = b"vitals,patient=p-x value=1" if path == "/write" else None
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                method, f"{influxd.url}{path}", params={"db": "wardwatch", **params, **auth}, data=data
            ) as r,
        ):
            return r.status

    async with Influxd(directory=tmp_path / "influxd", auth=admin) as influxd:
        for reader_password in ("first", "second"):
            done = await asyncio.to_thread(
                subprocess.run,
                [str(DEPLOY / "influxdb" / "setup-users.sh")],
                env={
                    "PATH": "/usr/bin:/bin",
                    "INFLUX_URL": influxd.url,
                    "INFLUX_ADMIN_PASSWORD": admin[1],
                    "INGEST_PASSWORD": "ingest-pw",
                    "READER_PASSWORD": reader_password,
                },
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        assert "ingest: WRITE on wardwatch" in done.stdout
        ingest, reader = ("ingest", "ingest-pw"), ("reader", "second")
        assert await status("POST", "/write", None) == 401
        assert await status("POST", "/write", ingest) == 204
        assert await status("POST", "/write", reader) == 403
        assert await status("POST", "/query", ingest, q="SELECT count(value) FROM vitals") == 403
        assert await status("POST", "/query", reader, q="SELECT count(value) FROM vitals") == 200
        assert await status("POST", "/query", ("reader", "first"), q="SHOW DATABASES") == 401
        assert await status("POST", "/query", reader, q='DROP MEASUREMENT "vitals"') == 403


def test_influxdb_conf_turns_on_auth_and_continuous_queries() -> None:
    text = (DEPLOY / "influxdb" / "influxdb.conf").read_text()
    http = text.split("[http]", 1)[1].split("[", 1)[0]
    cq = text.split("[continuous_queries]", 1)[1].split("[", 1)[0]
    assert re.search(r"^\s*auth-enabled = true$", http, re.M)
    assert re.search(r"^\s*enabled = true$", cq, re.M)
