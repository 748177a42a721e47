"""``wardwatch up``: the whole system on one machine, simulated patients through the real pipeline.

Starts, in order, each as a real server or a separate ``wardwatch`` process:

1. mosquitto (TLS, a password and least-privilege ACL entry per gateway and service, persistence),
2. InfluxDB 1.x (or uses an existing InfluxDB given with ``--influx-url``),
3. a page receiver (webhook; every page is printed and appended to ``pages.jsonl``),
4. alerting (engine + alarm manager + API) and ingest,
5. the simulator (``wardwatch sim run``: every device of the scenario on a real BLE stack, one HCI
   controller per home served over TCP) and one gateway per home (``wardwatch gateway``, plain bleak
   through the simulator's bleak backend; with ``--ble bluez`` the host's own BlueZ instead).

Everything lives in a state folder (default ``.wardwatch/``); running again reuses it (passwords,
database, alarm history). Ctrl-C stops everything. The stack imports only the core: the parts run
as their own processes, configured by the files written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from wardwatch.core.broker import Site, write_site
from wardwatch.core.errors import WardwatchError
from wardwatch.core.servers import Influxd, Mosquitto, free_port, wait_for
from wardwatch.stack.child import Child
from wardwatch.stack.configs import (
    GATEWAY_SLOTS,
    INFLUX_ADMIN,
    INFLUX_INGEST,
    INFLUX_READER,
    INGEST_DATABASE,
    PartConfigs,
)
from wardwatch.stack.enrol import enrol
from wardwatch.stack.errors import StackError
from wardwatch.stack.options import StackOptions
from wardwatch.stack.pagelog import PageLog
from wardwatch.stack.proxy import TcpProxy

__all__ = ["API_USER", "Child", "PageLog", "Stack", "StackOptions", "TcpProxy", "running_stack"]

_log = logging.getLogger("wardwatch.stack")

RESTART_DELAY_S: Final = 2.0
API_USER: Final = "nurse"


def _wardwatch() -> list[str]:
    """How to run the ``wardwatch`` command of this very environment."""
    return [sys.executable, "-m", "wardwatch.core"]


async def _describe(scenario: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *_wardwatch(), "sim", "describe", scenario, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise StackError(f"cannot read scenario {scenario!r}: {err.decode(errors='replace').strip()}")
    description: dict[str, Any] = json.loads(out)
    return description


async def _check_gateway(config: Path) -> None:
    """``wardwatch gateway check``: refuse a config its gateway could not serve (more devices than slots)."""
    process = await asyncio.create_subprocess_exec(
        *_wardwatch(),
        "gateway",
        "check",
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        problem = err.decode(errors="replace").strip().removeprefix("wardwatch gateway: ")
        raise StackError(f"{problem}. In a scenario file, give each gateway fewer patients (more gateways)")


class Stack:
    """The running system; :meth:`run` starts it, supervises the children and stops it all on exit."""

    def __init__(
        self,
        options: StackOptions,
        echo: Callable[[str], None] | None = None,
        on_broker: Callable[[Stack], Awaitable[None]] | None = None,
    ) -> None:
        self.options = options
        self.on_broker = on_broker  # awaited once the broker runs, before any service starts (tests subscribe)
        self.state = options.state.resolve()
        self.echo = echo or (lambda line: print(line, flush=True))
        self.children: list[Child] = []
        self.pages = PageLog(self.state / "pages.jsonl", self.echo)
        self.summary: dict[str, Any] = {}
        self.ready = asyncio.Event()
        # the servers and relays, for fault tests (stop/start/kill the broker or the database, cut a link)
        self.broker: Mosquitto | None = None
        self.influxd: Influxd | None = None
        self.proxies: dict[str, TcpProxy] = {}  # home (gateway id) -> its link to the broker
        self.mqtt_users: dict[str, str] = {}  # broker user -> password
        self.influx_users: dict[str, str] = {}  # InfluxDB user -> password (when the stack started influxd)
        self.configs = PartConfigs(self.state, options, self.influx_users)

    def child(self, name: str) -> Child:
        """The supervised child called ``name`` (``alerting``, ``ingest``, ``sim``, ``gateway-<home>``)."""
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(f"no child {name!r}; children: {', '.join(c.name for c in self.children)}")

    async def kill_child(self, name: str) -> None:
        """``kill -9`` one child; the supervisor restarts it after ``RESTART_DELAY_S``, as in production."""
        await self.child(name).kill()

    async def hold_child(self, name: str) -> None:
        """Stop one child gracefully and keep it down (until :meth:`release_child`)."""
        child = self.child(name)
        child.held = True
        await child.stop()

    async def release_child(self, name: str) -> None:
        """Start a held child again."""
        child = self.child(name)
        child.held = False
        if not child.running:
            await child.start()

    def step(self, text: str) -> None:
        """Show start-up progress."""
        if not self.options.quiet:
            self.echo(f"  [{time.strftime('%H:%M:%S')}] {text}")

    async def run(self) -> None:
        """Start everything, print where to look, supervise until cancelled or ``duration_s`` passed."""
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.state / "logs").mkdir(exist_ok=True)
        async with contextlib.AsyncExitStack() as stack:
            scenario = await _describe(self.options.scenario)
            ward = scenario["ward"]
            homes = sorted({p["gateway"] for p in scenario["patients"]})
            self.step(f"scenario {scenario['name']!r}: {len(scenario['patients'])} patients, {len(homes)} homes")
            if not self.options.allow_over_capacity:
                await self._check_gateways(scenario, homes)

            if self.options.broker_credentials is not None:
                mqtt_section = self._existing_broker(homes)
            else:
                mqtt_section = await self._start_broker(stack, ward, homes)
            influx_url = self.options.influx_url
            if influx_url is None:
                influx_url = await self._start_influxd(stack)
            self.step(f"InfluxDB: {influx_url} (database {INGEST_DATABASE!r})")
            receiver = await self._start_page_receiver(stack)
            # exit callbacks run last-in first-out: the children stop before the servers above
            stack.push_async_callback(self._stop_children)
            self.step(f"page receiver: {receiver}/<destination> -> {self.pages.path}")

            api_port = self.options.api_port or free_port()
            api_password = self._api_password()
            fhir_url, console_url = await self._start_services(
                ward, mqtt_section, receiver, api_port, api_password, influx_url
            )
            self.step(f"alerting API: http://127.0.0.1:{api_port}/api/v1/alarms   ingest -> {influx_url}")
            await self._enrol(scenario, homes, api_port, api_password)
            if fhir_url is not None:
                self.step(f"FHIR exporter -> {fhir_url} (1-minute summaries; Observation?code=http://loinc.org|8867-4)")
            ports = await self._start_simulator(scenario, homes)
            await self._start_gateways(scenario, homes, mqtt_section, ports)

            service_mqtt = mqtt_section("ingest")
            self.summary = {
                "mqtt": "{}://{}:{}".format(
                    "mqtts" if service_mqtt["tls"] else "mqtt", service_mqtt["host"], service_mqtt["port"]
                ),
                "mqtt_ca": str(service_mqtt.get("ca_file")),
                "influx": influx_url,
                "api": f"http://127.0.0.1:{api_port}",
                "api_user": API_USER,
                "pages": str(self.pages.path),
                "logs": str(self.state / "logs"),
                "state": str(self.state),
                **({"fhir": fhir_url} if fhir_url is not None else {}),
                **({"console": console_url} if console_url is not None else {}),
                # what the scenario will show, so a newcomer knows what to watch for and when
                "scenario": f"{scenario['name']}: {scenario.get('description') or 'no description'}",
            }
            self._print_summary(api_password, influx_url)
            self.ready.set()
            await self._supervise()

    def _existing_broker(self, homes: list[str]) -> Callable[[str], dict[str, Any]]:
        """Each principal's [mqtt] section for the broker given by ``broker_credentials``."""
        assert self.options.broker_credentials is not None
        services = ["ingest", "alerting", *(["fhir"] if self.options.fhir else [])]
        mqtt_section = self._external_broker(self.options.broker_credentials, [*services, *homes])
        first = mqtt_section("ingest")
        self.step(
            f"broker: existing {first['host']}:{first['port']} (credentials in {self.options.broker_credentials})"
        )
        return mqtt_section

    async def _start_influxd(self, stack: contextlib.AsyncExitStack) -> str:
        """InfluxDB 1.x with auth: the database, a write-only user for ingest, a read-only one for people."""
        influxd = await stack.enter_async_context(
            Influxd(
                directory=self.state / "influxdb",
                keep_directory=True,
                auth=(INFLUX_ADMIN, self._secret(f"influx-{INFLUX_ADMIN}")),
                continuous_queries=True,  # the downsampling policy fills
            )
        )
        self.influxd = influxd
        await influxd.create_database(INGEST_DATABASE)
        self.influx_users.update({user: self._secret(f"influx-{user}") for user in (INFLUX_INGEST, INFLUX_READER)})
        await influxd.ensure_user(
            INFLUX_INGEST, self.influx_users[INFLUX_INGEST], privilege="WRITE", database=INGEST_DATABASE
        )
        await influxd.ensure_user(
            INFLUX_READER, self.influx_users[INFLUX_READER], privilege="READ", database=INGEST_DATABASE
        )
        return influxd.url

    async def _start_page_receiver(self, stack: contextlib.AsyncExitStack) -> str:
        """The :class:`PageLog` webhook receiver; returns its base URL (``/<destination>`` appended per page)."""
        receiver_port = free_port()
        app = web.Application()
        app.router.add_post("/pages/{destination}", self.pages.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", receiver_port).start()
        return f"http://127.0.0.1:{receiver_port}/pages"

    async def _start_services(
        self,
        ward: str,
        mqtt_section: Callable[[str], dict[str, Any]],
        receiver: str,
        api_port: int,
        api_password: str,
        influx_url: str,
    ) -> tuple[str | None, str | None]:
        """Alerting, ingest and (as asked) the FHIR exporter and the console; returns their URLs."""
        alerting_config = self.configs.alerting(ward, mqtt_section("alerting"), receiver, api_port)
        await self._ensure_api_user(alerting_config, api_password)
        await self._ensure_identity_key()
        self._spawn("alerting", ["alerting", "run", "--config", str(alerting_config)])
        ingest_config = self.configs.ingest(mqtt_section("ingest"), influx_url)
        if self.influxd is not None:  # ingest writes as a write-only user: the admin makes the schema first
            await self._make_influx_schema(ingest_config)
        self._spawn("ingest", ["ingest", "--config", str(ingest_config)])
        fhir_url = self._spawn_fhir(mqtt_section) if self.options.fhir else None
        console_url = self._spawn_console(ward, api_port, influx_url) if self.options.console else None
        for child in self.children:
            await child.start()
        return fhir_url, console_url

    async def _enrol(self, scenario: dict[str, Any], homes: list[str], api_port: int, api_password: str) -> None:
        """Admit the scenario's patients and bind their kits through the alerting API's registry."""
        try:
            admitted, bound = await enrol(
                f"http://127.0.0.1:{api_port}",
                API_USER,
                api_password,
                scenario["ward"],
                scenario["patients"],
                GATEWAY_SLOTS,
                # a crowded scenario run on purpose: the registry takes the kit, the gateway finds it over capacity
                over_capacity=self.options.allow_over_capacity,
            )
        except WardwatchError as exc:
            raise StackError(f"registry: {exc}") from None
        self.step(
            f"registry: {len(scenario['patients'])} patients on {len(homes)} gateways "
            f"({admitted} admitted, {bound} devices bound now; GET /api/v1/registry/patients)"
        )

    async def _start_simulator(self, scenario: dict[str, Any], homes: list[str]) -> dict[str, int]:
        """``wardwatch sim run`` with one HCI controller per home; returns each home's controller port."""
        ports = {home: free_port() for home in homes}
        bluez = self.options.ble == "bluez"
        transports = ["vhci"] if bluez else [f"tcp-server:127.0.0.1:{ports[home]}" for home in homes]
        sim_argv = ["sim", "run", "--scenario", self.options.scenario, "--speed", str(self.options.speed)]
        for transport in transports:
            sim_argv += ["--transport", transport]
        sim_argv += ["--ground-truth", str(self.state / "ground-truth.jsonl")]
        sim = self._spawn("sim", sim_argv)
        await sim.start()
        self.step(
            f"simulator: {sum(len(p['devices']) for p in scenario['patients'])} BLE devices on {transports[0]}"
            + (f" (+{len(transports) - 1} more controllers)" if len(transports) > 1 else "")
        )
        await self._wait_for_log(sim, '"running"', 60, "the simulator's devices to advertise")
        return ports

    async def _start_gateways(
        self,
        scenario: dict[str, Any],
        homes: list[str],
        mqtt_section: Callable[[str], dict[str, Any]],
        ports: dict[str, int],
    ) -> None:
        """One ``wardwatch gateway run`` per home (through its TCP relay when ``gateway_proxy``)."""
        bluez = self.options.ble == "bluez"
        for home in homes:
            patients = [p for p in scenario["patients"] if p["gateway"] == home]
            mqtt = mqtt_section(home)
            if home in self.proxies:
                mqtt["port"] = self.proxies[home].port
            config = self.configs.gateway(home, scenario["ward"], patients, mqtt, ports[home], bluez)
            child = self._spawn(f"gateway-{home}", ["gateway", "run", "--config", str(config)])
            await child.start()
        self.step(f"gateways: {len(homes)} (one per home), queues in {self.state / 'gateways'}")

    async def _start_broker(
        self, stack: contextlib.AsyncExitStack, ward: str, homes: list[str]
    ) -> Callable[[str], dict[str, Any]]:
        """mosquitto with TLS, a user per service and per home, the generated ACL; returns each user's [mqtt]."""
        site = Site(gateways=dict.fromkeys(homes, ward), extra_users=dict(self.options.extra_mqtt_users))
        files = write_site(self.state / "broker", site, tls=False)
        users = {user: files.password(user) for user in site.users}
        self.mqtt_users = users
        broker = await stack.enter_async_context(
            Mosquitto(
                users=users,
                acl=site.acl_text(),
                tls=True,
                persistence=True,
                autosave_interval=10,
                port=self.options.mqtt_port,
                directory=self.state / "mosquitto",
                keep_directory=True,
            )
        )
        self.broker = broker
        self.step(f"mosquitto: mqtts://{broker.host}:{broker.port} (TLS, {len(users)} users, ACL)")
        if self.options.gateway_proxy:  # closed after the children stop (exit callbacks run LIFO)
            for home in homes:
                self.proxies[home] = await stack.enter_async_context(TcpProxy(broker.host, broker.port))
            self.step(f"gateway links: through {len(homes)} TCP relays (fault injection)")
        if self.on_broker is not None:
            await self.on_broker(self)

        def mqtt_section(user: str) -> dict[str, Any]:
            assert broker.ca_file is not None
            return {
                "host": broker.host,
                "port": broker.port,
                "tls": True,
                "ca_file": broker.ca_file,
                "username": user,
                "password": users[user],
                "client_id": f"wardwatch-{user}",
            }

        return mqtt_section

    def _external_broker(self, folder: Path, users: list[str]) -> Callable[[str], dict[str, Any]]:
        """Each user's [mqtt] section from a `wardwatch broker init` folder, checked before anything starts."""
        if self.options.gateway_proxy:
            raise StackError("gateway_proxy needs the broker wardwatch up starts itself")
        sections: dict[str, dict[str, Any]] = {}
        for user in users:
            path = folder / "credentials" / f"{user}.toml"
            try:
                section = dict(tomllib.loads(path.read_text(encoding="utf-8"))["mqtt"])
            except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
                gateways = " ".join(f"--gateway WARD/{u}" for u in users if u not in {"ingest", "alerting"})
                raise StackError(
                    f"no broker credentials for {user!r} in {path} ({exc}); create them with "
                    f"`wardwatch broker init {folder} --host BROKER_HOST {gateways}` and load its passwd and acl "
                    "files into that broker"
                ) from None
            section["client_id"] = f"wardwatch-{user}"
            sections[user] = section
        return lambda user: dict(sections[user])

    def _secret(self, name: str) -> str:
        """A random password kept in ``<state>/secrets/<name>`` (mode 0600), made on first use."""
        path = self.state / "secrets" / name
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_text(secrets.token_urlsafe(18), encoding="utf-8")
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()

    async def _make_influx_schema(self, ingest_config: Path) -> None:
        """``wardwatch ingest schema`` as the InfluxDB admin: database, retention policies, continuous query."""
        admin = {"WARDWATCH_INFLUX__USERNAME": INFLUX_ADMIN, "WARDWATCH_INFLUX__PASSWORD": self._secret("influx-admin")}
        process = await asyncio.create_subprocess_exec(
            *_wardwatch(),
            "ingest",
            "schema",
            "--config",
            str(ingest_config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **admin},
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            raise StackError(f"cannot make the InfluxDB schema: {err.decode(errors='replace').strip()}")

    def _api_password(self) -> str:
        path = self.state / "api-password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(12), encoding="utf-8")
            path.chmod(0o600)
        return path.read_text(encoding="utf-8").strip()

    async def _ensure_api_user(self, config: Path, password: str) -> None:
        process = await asyncio.create_subprocess_exec(
            *_wardwatch(),
            "alerting",
            "user",
            "add",
            API_USER,
            "--role",
            "charge_nurse",
            "--config",
            str(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "WW_ALERTING_PASSWORD": password},
        )
        _, err = await process.communicate(password.encode() + b"\n")
        text = err.decode(errors="replace")
        if process.returncode != 0 and "exists" not in text:
            raise StackError(f"cannot create the API user: {text.strip()}")

    async def _ensure_identity_key(self) -> None:
        """``wardwatch alerting registry-key``: the registry's identity key, made once per state folder."""
        key = self.configs.identity_key()
        if key.exists():
            return
        key.parent.mkdir(mode=0o700, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            *_wardwatch(),
            "alerting",
            "registry-key",
            str(key),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await process.communicate()
        if process.returncode != 0:
            raise StackError(f"cannot create the registry's identity key: {err.decode(errors='replace').strip()}")

    async def _check_gateways(self, scenario: dict[str, Any], homes: list[str]) -> None:
        """Before starting anything: each home's gateway config passes ``wardwatch gateway check``
        (a gateway binding more continuous devices than its adapter has slots is refused)."""
        placeholder = {"host": "127.0.0.1", "port": 1883, "tls": False}  # the real [mqtt] comes later
        configs = [
            self.configs.gateway(
                home,
                scenario["ward"],
                [p for p in scenario["patients"] if p["gateway"] == home],
                placeholder,
                0,
                False,
                with_devices=True,
            )
            for home in homes
        ]
        await asyncio.gather(*(_check_gateway(config) for config in configs))

    def _spawn_fhir(self, mqtt_section: Callable[[str], dict[str, Any]]) -> str:
        """The FHIR exporter as its own principal, and the local FHIR test server unless a URL was given."""
        url = self.options.fhir_url
        if url is None:
            port = free_port()
            (self.state / "fhir").mkdir(exist_ok=True)
            data = self.state / "fhir" / "resources.json"
            self._spawn("ehr", ["fhir", "testserver", "--port", str(port), "--data", str(data)])
            url = f"http://127.0.0.1:{port}/"
        config = self.configs.fhir(mqtt_section("fhir"), url)
        self._spawn("fhir", ["fhir", "--config", str(config)])
        return url

    def _spawn_console(self, ward: str, api_port: int, influx_url: str) -> str:
        """The nurses' web console: logs in to the alerting API for its users, reads trends as the InfluxDB reader."""
        port = self.options.console_port or free_port()
        config = self.configs.console(ward, port, api_port, influx_url)
        self._spawn("console", ["console", "--config", str(config)])
        return f"http://127.0.0.1:{port}/"

    def _spawn(self, name: str, args: list[str]) -> Child:
        child = Child(name, [*_wardwatch(), *args], self.state / "logs" / f"{name}.log")
        self.children.append(child)
        return child

    async def _wait_for_log(self, child: Child, marker: str, timeout: float, what: str) -> None:
        def seen() -> bool:
            if child.process is not None and child.process.returncode is not None:
                raise StackError(f"{child.name} exited ({child.process.returncode}); see {child.log_path}")
            return child.log_path.exists() and marker in child.log_path.read_text(errors="replace")

        await wait_for(seen, timeout, what=what, max_interval=0.2)

    def _print_summary(self, api_password: str, influx_url: str) -> None:
        query = "SELECT count(value) FROM vitals GROUP BY signal"
        if self.options.influx_api == "v1":
            login = f' -u "{INFLUX_READER}:$(cat {self.state / "secrets" / f"influx-{INFLUX_READER}"})"'
            vitals = (
                f"curl -sG{login if self.influx_users else ''} {influx_url}/query "
                f'--data-urlencode db={INGEST_DATABASE} --data-urlencode "q={query}"'
            )
        else:
            vitals = f"bucket {self.options.influx_bucket!r} at {influx_url} (measurement vitals)"
        credentials = (self.options.broker_credentials or self.state / "broker") / "credentials"
        self.echo(
            "\nwardwatch is up. Where to look:\n"
            + (
                f"  console       {self.summary['console']}   user {API_USER}   password {api_password}\n"
                if "console" in self.summary
                else ""
            )
            + f"  scenario      {self.summary['scenario']}\n"
            + f"  alarms (API)  curl -s -X POST {self.summary['api']}/api/v1/login "
            f'-d \'{{"name": "{API_USER}", "password": "{api_password}"}}\'\n'
            f"                then: curl -s -H 'Authorization: Bearer TOKEN' {self.summary['api']}/api/v1/alarms\n"
            f"  pages         printed below as they arrive; all of them in {self.pages.path}\n"
            f"  vitals        {vitals}\n"
            f"  MQTT          {self.summary['mqtt']} (CA {self.summary['mqtt_ca']}; users in {credentials})\n"
            f"  logs          {self.summary['logs']}/<service>.log\n"
            f"  ground truth  {self.state / 'ground-truth.jsonl'}\n"
            "Ctrl-C stops everything.\n"
        )

    async def _supervise(self) -> None:
        deadline = None if self.options.duration_s is None else time.monotonic() + self.options.duration_s
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            for child in self.children:
                process = child.process
                if process is not None and process.returncode is not None and not child.held:
                    child.restarts += 1
                    self.echo(f"  ! {child.name} exited ({process.returncode}); restarting (see {child.log_path})")
                    await asyncio.sleep(RESTART_DELAY_S)
                    await child.start()

    async def _stop_children(self) -> None:
        """Alerting first (stopping the system is not a monitoring outage to page for), then the gateways
        (they commit their queues), the simulator, ingest (it stores what is still in flight), the FHIR
        exporter, and then the rest (the local FHIR server saves its resources on SIGTERM)."""
        order = ["alerting", "gateway-", "sim", "ingest", "fhir"]
        for prefix in order:
            await asyncio.gather(*(child.stop() for child in self.children if child.name.startswith(prefix)))
        await asyncio.gather(*(child.stop() for child in self.children))


@contextlib.asynccontextmanager
async def running_stack(
    options: StackOptions,
    echo: Callable[[str], None] | None = None,
    on_broker: Callable[[Stack], Awaitable[None]] | None = None,
) -> AsyncIterator[Stack]:
    """The stack running in the background of the block (for tests); stopped on exit."""
    stack = Stack(options, echo, on_broker)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(stack.run(), name="wardwatch-up")
        try:
            waiter = asyncio.ensure_future(stack.ready.wait())
            await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            yield stack
        finally:
            task.cancel()
