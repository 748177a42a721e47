"""`wardwatch up`: the whole system from one command — vitals land in InfluxDB, deteriorations page."""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wardwatch.core.broker import Site, write_site
from wardwatch.core.servers import Mosquitto, free_port, wait_for
from wardwatch.stack.cli import main as up_main
from wardwatch.stack.up import StackOptions, running_stack

pytestmark = pytest.mark.slow


def _pages(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _count_by_patient(influx: str, reader_password: str) -> dict[str, int]:
    query = urllib.parse.urlencode(
        {
            "db": "wardwatch",
            "q": "SELECT count(value) FROM vitals GROUP BY patient",
            "u": "reader",
            "p": reader_password,
        }
    )
    with urllib.request.urlopen(f"{influx}/query?{query}", timeout=10) as response:  # noqa: S310 - loopback
        result = json.load(response)["results"][0]
    return {s["tags"]["patient"]: s["values"][0][1] for s in result.get("series", [])}


def _printed_command(lines: list[str], label: str) -> str:
    """The shell command printed after ``label`` in the "where to look" summary."""
    line = next(line for line in lines if line.strip().startswith(label))
    return line.split(label, 1)[1].strip()


def _run_printed(command: str) -> str:
    """Run a printed command exactly as a user would paste it into a shell; its standard output."""
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


async def test_up_runs_the_ward_and_pages_for_the_desaturation(tmp_path: Path) -> None:
    lines: list[str] = []
    options = StackOptions(state=tmp_path / "state", scenario="demo", speed=4.0, quiet=True)
    async with running_stack(options, echo=lines.append) as stack:
        influx = stack.summary["influx"]
        pages = Path(stack.summary["pages"])
        patients = {f"p-d0{i}" for i in range(6)}
        reader = stack.influx_users["reader"]
        await wait_for(
            lambda: set(_count_by_patient(influx, reader)) == patients, 90, what="vitals of every patient stored"
        )
        # InfluxDB needs credentials: nobody else on the host writes (or drops) anything
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{influx}/write", params={"db": "wardwatch"}, data=b"vitals,patient=p-x value=1") as answer,
        ):
            assert answer.status == 401

        def desaturation_paged() -> bool:
            return any(p["page"].get("patient") == "p-d01" and "spo2" in json.dumps(p["page"]) for p in _pages(pages))

        await wait_for(desaturation_paged, 150, what="a page for p-d01's desaturation", max_interval=1.0)

        # continuous queries run (every minute): the downsampled retention policy fills
        async def downsampled() -> bool:
            assert stack.influxd is not None
            found = await stack.influxd.query('SELECT count("mean") FROM "downsampled"."vitals_1m"', db="wardwatch")
            return bool(found["results"][0].get("series"))

        await wait_for(downsampled, 90, what="downsampled points", max_interval=2.0)

        # every command printed for the user works as printed
        said = "\n".join(lines).splitlines()
        login = _printed_command(said, "alarms (API)")
        token = json.loads(_run_printed(login))["token"]
        alarms = json.loads(_run_printed(_printed_command(said, "then:").replace("TOKEN", token)))
        assert any(a["patient"] == "p-d01" for a in alarms["alarms"]), alarms
        stored = json.loads(_run_printed(_printed_command(said, "vitals")))
        assert stored["results"][0]["series"], stored
        # the console's printed URL and demo login work: a newcomer sees the ward board
        url, _, user, _, password = _printed_command(said, "console").split()
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
            browser.post(url + "api/login", json={"name": user, "password": password}) as answer,
        ):
            assert answer.status == 200, await answer.text()
            async with browser.get(url + "api/board") as board:
                shown = {p["patient"] for p in (await board.json())["patients"]}
            assert shown == patients
    printed = "\n".join(lines)
    assert "wardwatch is up" in printed
    assert "PAGE -> primary-nurse" in printed
    # the brief dip and the motion burst of p-d02 never page
    assert not [p for p in _pages(pages) if p["page"].get("patient") == "p-d02"]

    # running it again on the same state folder works and keeps what was stored
    async with running_stack(options, echo=lines.append) as again:
        before = _count_by_patient(again.summary["influx"], again.influx_users["reader"])
        assert set(before) == patients


async def test_up_uses_an_existing_broker_given_its_credentials(tmp_path: Path) -> None:
    """`--broker-credentials`: the stack starts no broker of its own and every service logs in to this one."""
    homes = [f"gw-home-0{i}" for i in range(6)]
    site = Site(gateways=dict.fromkeys(homes, "ward-a"))
    port = free_port()
    files = write_site(tmp_path / "site", site, tls=False, host="127.0.0.1", port=port)
    users = {user: files.password(user) for user in site.users}
    async with Mosquitto(port=port, users=users, acl=site.acl_text(), directory=tmp_path / "their-broker") as broker:
        options = StackOptions(
            state=tmp_path / "state", scenario="demo", speed=4.0, quiet=True, broker_credentials=tmp_path / "site"
        )
        async with running_stack(options, echo=lambda line: None) as stack:
            assert stack.broker is None  # none of its own
            assert stack.summary["mqtt"] == f"mqtt://127.0.0.1:{broker.port}"
            influx = stack.summary["influx"]
            reader = stack.influx_users["reader"]
            await wait_for(
                lambda: len(_count_by_patient(influx, reader)) == 6, 90, what="vitals through the existing broker"
            )
    assert "New client connected" in broker.log_text()


def test_up_explains_missing_broker_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, nowhere = tmp_path / "state", tmp_path / "nowhere"
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert up_main(["--state", str(state), "--broker-credentials", str(nowhere)]) == 1
    finally:  # the command configures logging for its process; give pytest its own back
        root.handlers[:] = handlers
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "no broker credentials for 'ingest'" in err
    assert f"wardwatch broker init {nowhere}" in err
