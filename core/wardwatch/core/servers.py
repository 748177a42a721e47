"""Real mosquitto and influxd servers as child processes, for tests, benchmarks and ``wardwatch up``.

Each server gets its own directory (config, data, log) and free loopback ports, counts as ready
when it answers an MQTT CONNECT (mosquitto) or answers ``GET /ping`` with 204 (influxd), and can
be stopped, killed, paused and started again on the same ports with the same data: the faults the
rest of the system must survive. Standard library only (plus the ``openssl`` and
``mosquitto_passwd`` commands), so that the core stays light.

    async with Mosquitto(persistence=True) as broker:
        ...  # broker.host, broker.port, broker.endpoint()
        await broker.stop()
        await broker.start()  # same port, same persistence file
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import urllib.parse
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.errors import ConfigError, ServerStartError, WaitTimeoutError
from wardwatch.core.waiting import wait_for

__all__ = [
    "LOOPBACK",
    "Influxd",
    "Mosquitto",
    "MqttEndpoint",
    "TlsMaterial",
    "free_port",
    "make_ca_and_server_cert",
    "wait_for",
    "write_password_file",
]

LOOPBACK = "127.0.0.1"
_SETUP_HINT = "run scripts/setup"


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` now (another process may still take it later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _which(binary: str, package: str) -> str:
    """Return the path of ``binary`` or raise with the package that provides it."""
    found = shutil.which(binary)
    if found is None:
        raise ServerStartError(binary, f"{binary} not found: {_SETUP_HINT} (apt package {package})")
    return found


def _run_tool(argv: list[str], package: str, hint: str = "") -> None:
    """Run a short helper command (openssl, mosquitto_passwd); raise with its stderr if it fails."""
    exe = _which(argv[0], package)
    what = f"`{argv[0]} {argv[1]}`"
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ServerStartError(argv[0], f"{what} did not finish within 60 s") from exc
    if done.returncode != 0:
        raise ServerStartError(
            argv[0], f"{what} failed with exit status {done.returncode}: {done.stderr.strip()}{hint}"
        )


# --- TLS material -------------------------------------------------------------------------------

_OPENSSL_CONFIG = """\
# Written by wardwatch.core.servers: extensions for a throwaway test CA and its leaf certificates.
[req]
distinguished_name = dn
prompt = no

[dn]
CN = wardwatch

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {san}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class TlsMaterial:
    """PEM files of a throwaway CA and of a server and a client certificate it signed."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_ca_and_server_cert(
    directory: Path | str,
    *,
    dns_names: tuple[str, ...] = ("localhost",),
    ip_addresses: tuple[str, ...] = (LOOPBACK,),
    client_name: str = "wardwatch-test-client",
    days: int = 30,
) -> TlsMaterial:
    """Make a CA, a server certificate (SAN ``dns_names`` + ``ip_addresses``) and a client certificate.

    Uses P-256 keys and the ``openssl`` command (OpenSSL >= 3.0 for ``req -CA``): three processes,
    a few tens of milliseconds. Private keys are written with mode 0600.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (*dns_names, client_name):
        if not name or any(c in name for c in "/\\,=\n"):
            raise ConfigError(f"{name!r} cannot be used in a certificate name", key="dns_names")
    san = ", ".join([*(f"DNS:{n}" for n in dns_names), *(f"IP:{ip}" for ip in ip_addresses)])
    config = out / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(san=san))
    tls = TlsMaterial(
        ca_cert=out / "ca.crt",
        ca_key=out / "ca.key",
        server_cert=out / "server.crt",
        server_key=out / "server.key",
        client_cert=out / "client.crt",
        client_key=out / "client.key",
    )
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    common = ["-days", str(days), "-config", str(config)]
    jobs = [
        (tls.ca_cert, tls.ca_key, "wardwatch test CA", "ca_ext"),
        (tls.server_cert, tls.server_key, dns_names[0] if dns_names else "server", "server_ext"),
        (tls.client_cert, tls.client_key, client_name, "client_ext"),
    ]
    for cert, key, subject, extensions in jobs:
        signed_by_ca = [] if cert == tls.ca_cert else ["-CA", str(tls.ca_cert), "-CAkey", str(tls.ca_key)]
        _run_tool(
            [
                *("openssl", "req", "-x509", *new_key, "-keyout", str(key), "-out", str(cert)),
                *("-subj", f"/CN={subject}", "-extensions", extensions, *common, *signed_by_ca),
            ],
            "openssl",
            hint=" (this needs OpenSSL 3.0 or later: run scripts/setup)",
        )
        key.chmod(0o600)
    return tls


# --- child process plumbing ---------------------------------------------------------------------


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill and reap ``proc`` if it still runs (also the at-exit safety net)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


class _ChildServer:
    """A server run as a child process in its own directory; subclasses say how to configure and probe it."""

    _name = "server"
    _package = "server"

    def __init__(
        self,
        *,
        binary: str,
        directory: Path | str | None,
        keep_directory: bool,
        startup_timeout: float,
        stop_timeout: float,
    ) -> None:
        self._binary = binary
        if directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix=f"wardwatch-{self._name}-"))
            self._owns_directory = not keep_directory
        else:
            self._directory = Path(directory)
            self._owns_directory = False
        self._startup_timeout = startup_timeout
        self._stop_timeout = stop_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._paused = False
        self._started_once = False
        self._ports_given = False

    # Subclass hooks.
    def _prepare_first_start(self) -> None:
        """Make the files that stay the same across restarts (certificates, password file)."""

    def _write_config(self) -> None:
        raise NotImplementedError

    def _argv(self, exe: str) -> list[str]:
        raise NotImplementedError

    def _pick_new_ports(self) -> None:
        raise NotImplementedError

    async def _probe(self) -> bool:
        raise NotImplementedError

    async def _after_first_ready(self) -> None:
        """Run once, after the very first successful start."""

    @property
    def directory(self) -> Path:
        """The server's own directory: config, data and log."""
        return self._directory

    @property
    def config_path(self) -> Path:
        """The generated config file (rewritten on every start)."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, appended to across restarts."""
        return self._directory / f"{self._name}.log"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """True while the child process exists (it may be paused)."""
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        """The whole log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _log_tail(self, offset: int, lines: int = 40) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    async def start(self) -> None:
        """Start the server and wait until it is ready; a no-op if it runs already.

        The first start picks new free ports if the chosen ones turn out to be taken; later
        starts reuse the same ports and data, like a restarted production server.
        """
        if self.running:
            return
        self._forget()  # a child that died by itself
        exe = _which(self._binary, self._package)
        first = not self._started_once
        if first:
            self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            await asyncio.to_thread(self._prepare_first_start)
        attempts = 5 if first and not self._ports_given else 1
        for attempt in range(1, attempts + 1):
            self._write_config()
            offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            proc = self._spawn(exe)
            problem = await self._wait_ready(proc)
            if problem is None:
                break
            self._forget()
            tail = self._log_tail(offset)
            if attempt < attempts and "address already in use" in tail.lower():
                self._pick_new_ports()
                continue
            raise ServerStartError(
                self._name,
                f"{problem}; the log below says why (config {self.config_path}, log {self.log_path})",
                log_tail=tail,
            )
        self._started_once = True
        if first:
            try:
                await self._after_first_ready()
            except BaseException:
                await self.kill()
                raise

    def _spawn(self, exe: str) -> subprocess.Popen[bytes]:
        """Start the child (Popen, not asyncio's subprocesses: the server is not tied to one loop)."""
        with self.log_path.open("ab") as log:
            proc = subprocess.Popen(
                self._argv(exe),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._directory,
                # Own session: Ctrl-C in a terminal reaches only us, and we stop the server in order.
                start_new_session=True,
            )
        self._proc = proc
        self._paused = False
        self._finalizer = weakref.finalize(self, _reap, proc)
        return proc

    async def _wait_ready(self, proc: subprocess.Popen[bytes]) -> str | None:
        """Wait for the probe; return None when ready, else what went wrong (the child is reaped)."""

        class _ExitedError(Exception):
            pass

        async def ready() -> bool:
            if proc.poll() is not None:
                raise _ExitedError
            return await self._probe()

        try:
            await wait_for(ready, self._startup_timeout, what=f"{self._name} to accept connections")
        except _ExitedError:
            return f"exited with status {proc.returncode} while starting"
        except WaitTimeoutError:
            _reap(proc)
            return f"not ready within {self._startup_timeout:g} s"
        except BaseException:
            _reap(proc)
            raise
        return None

    def _forget(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # reaps the child if it still runs
        self._finalizer = None
        self._proc = None
        self._paused = False

    async def stop(self) -> None:
        """Stop gracefully (SIGTERM; SIGKILL after ``stop_timeout`` s); keeps directory, data and ports."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.terminate()
                if self._paused:
                    proc.send_signal(signal.SIGCONT)
                try:
                    await wait_for(lambda: proc.poll() is not None, self._stop_timeout, what="exit")
                except WaitTimeoutError:
                    proc.kill()
                    await wait_for(lambda: proc.poll() is not None, 10, what=f"{self._name} to die")
        finally:
            self._forget()

    async def kill(self) -> None:
        """Kill at once (SIGKILL), like a crash or power loss; keeps directory, data and ports."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.kill()
                await wait_for(lambda: proc.poll() is not None, 10, what=f"{self._name} to die")
        finally:
            self._forget()

    async def restart(self) -> None:
        """Stop gracefully, then start again on the same ports with the same data."""
        await self.stop()
        await self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        if self._proc is not None and self.running:
            self._proc.send_signal(signal.SIGCONT)
            self._paused = False

    def _remove_directory(self) -> None:
        if self._owns_directory:
            shutil.rmtree(self._directory, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            self._remove_directory()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            self._remove_directory()


# MQTT 3.1.1 CONNECT (clean session, keep-alive 10 s): the readiness probe. Any CONNACK, even
# "not authorized", proves that mosquitto itself listens; TCP accept alone could be another
# process that holds the port.
_PROBE_CLIENT_ID = b"wardwatch-ready-probe"
_PROBE_CONNECT = (
    bytes([0x10, 12 + len(_PROBE_CLIENT_ID)])
    + b"\x00\x04MQTT\x04\x02\x00\x0a"
    + len(_PROBE_CLIENT_ID).to_bytes(2, "big")
    + _PROBE_CLIENT_ID
)


async def _mqtt_answers(host: str, port: int, tls: ssl.SSLContext | None) -> bool:
    """True if an MQTT broker on ``host:port`` answers a CONNECT with a CONNACK now."""
    try:
        # Short: a probe stuck on whatever holds the port must not delay noticing that the
        # server exited; a slow but healthy server is simply probed again.
        async with asyncio.timeout(0.25):
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            try:
                writer.write(_PROBE_CONNECT)
                await writer.drain()
                connack = await reader.readexactly(4)
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    return connack[0] == 0x20


# --- mosquitto ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MqttEndpoint:
    """Everything a client needs to connect to a broker as one user."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        """True if the listener speaks TLS (connect with ``ca_file`` as the trusted CA)."""
        return self.ca_file is not None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` or ``mqtts://host:port`` (no credentials)."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    def settings(self, **overrides: Any) -> MqttSettings:
        """These connection settings as the :class:`MqttSettings` every service's config holds."""
        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "tls": self.tls,
            "ca_file": self.ca_file,
            "cert_file": self.certfile,
            "key_file": self.keyfile,
            "username": self.username,
            "password": Secret(self.password) if self.password is not None else None,
        }
        values.update(overrides)
        return MqttSettings(**values)


def write_password_file(path: Path | str, users: Mapping[str, str]) -> Path:
    """Write a mosquitto password file for ``users`` (name -> password) with ``mosquitto_passwd``.

    The passwords pass through the command line, which is fine for throwaway test credentials.
    """
    target = Path(path)
    target.unlink(missing_ok=True)
    if not users:
        target.touch(mode=0o600)
        return target
    for index, (user, password) in enumerate(users.items()):
        if not user or ":" in user or any(c in user + password for c in "\r\n"):
            raise ConfigError(f"user {user!r}: no ':' or line breaks allowed", key="users")
        create = ["-c"] if index == 0 else []
        _run_tool(["mosquitto_passwd", *create, "-b", str(target), user, password], "mosquitto")
    return target


class Mosquitto(_ChildServer):
    """A mosquitto 2 broker as a child process on a free loopback port; an async context manager.

    ``users`` (name -> password) makes a password file, and then anonymous clients are refused
    unless ``allow_anonymous`` says otherwise; ``acl`` is the text of an ACL file. ``tls`` makes the
    listener TLS-only with a fresh CA (see :attr:`tls_material`); ``require_client_cert`` implies
    ``tls`` and demands a client certificate signed by that CA. With ``persistence`` the broker
    keeps retained messages, sessions and queued messages across :meth:`stop`/:meth:`start` (it
    saves on a graceful stop; ``autosave_interval`` also saves every so many seconds, for
    :meth:`kill`).

    ``bind_client_ids`` (default: on when there are ``users``) writes ``use_username_as_clientid``:
    the broker names every session after the user name and ignores the client id a client sends, so
    no principal can take over another's session (with another's client id the broker would close
    that connection and hand over its queued messages). Each instance of a service then needs its
    own principal (see :class:`wardwatch.core.broker.Site`).
    """

    _name = "mosquitto"
    _package = "mosquitto"

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int | None = None,
        persistence: bool = False,
        autosave_interval: int | None = None,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        allow_anonymous: bool | None = None,
        tls: bool = False,
        require_client_cert: bool = False,
        bind_client_ids: bool | None = None,
        # mosquitto's defaults (1000 queued, 20 in flight per client) silently drop messages to
        # a subscriber that falls behind a burst ("Outgoing messages are being dropped"); a
        # test or benchmark must see every message, so queue generously and do not cap in-flight
        # messages (0 = no limit; the client's MQTT 5 receive-maximum still applies).
        max_queued_messages: int = 100_000,
        max_inflight_messages: int = 0,
        extra_config: str = "",
        directory: Path | str | None = None,
        keep_directory: bool = False,
        startup_timeout: float = 10.0,
        stop_timeout: float = 10.0,
        binary: str = "mosquitto",
    ) -> None:
        super().__init__(
            binary=binary,
            directory=directory,
            keep_directory=keep_directory,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        self.host = host
        self._ports_given = port is not None
        self.port = port if port is not None else free_port(host)
        self.persistence = persistence
        self.autosave_interval = autosave_interval
        self.users: Mapping[str, str] = dict(users or {})
        self.acl = acl
        self.allow_anonymous = not self.users if allow_anonymous is None else allow_anonymous
        self.require_client_cert = require_client_cert
        self.bind_client_ids = bool(self.users) if bind_client_ids is None else bind_client_ids
        self.use_tls = tls or require_client_cert
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self.extra_config = extra_config
        self.tls_material: TlsMaterial | None = None
        self._probe_context: ssl.SSLContext | None = None

    @property
    def config_path(self) -> Path:
        """The generated ``mosquitto.conf`` (rewritten on every start)."""
        return self._directory / "mosquitto.conf"

    @property
    def persistence_dir(self) -> Path:
        """Where ``mosquitto.db`` lives when ``persistence`` is on."""
        return self._directory / "persistence"

    @property
    def password_file(self) -> Path | None:
        """The password file, if ``users`` were given."""
        return self._directory / "passwd" if self.users else None

    @property
    def acl_file(self) -> Path | None:
        """The ACL file, if ``acl`` was given."""
        return self._directory / "acl" if self.acl is not None else None

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate clients must trust, for a TLS broker."""
        return self.tls_material.ca_cert if self.tls_material else None

    @property
    def url(self) -> str:
        """``mqtt://host:port`` or ``mqtts://host:port``."""
        return f"{'mqtts' if self.use_tls else 'mqtt'}://{self.host}:{self.port}"

    def credentials(self, user: str) -> tuple[str, str]:
        """``(username, password)`` of one of ``users``."""
        try:
            return user, self.users[user]
        except KeyError:
            known = ", ".join(sorted(self.users)) or "none"
            raise ConfigError(f"no user {user!r} on this broker (users: {known})", key="users") from None

    def endpoint(self, user: str | None = None, *, client_cert: bool | None = None) -> MqttEndpoint:
        """Connection settings for ``user`` (None: anonymous).

        ``client_cert`` (default: whether the broker requires one) adds the CA-signed client
        certificate and key.
        """
        username, password = self.credentials(user) if user is not None else (None, None)
        with_cert = self.require_client_cert if client_cert is None else client_cert
        tls = self.tls_material
        if self.use_tls and tls is None:
            raise ConfigError("TLS material is made at the first start; start the broker first", key="tls")
        return MqttEndpoint(
            host=self.host,
            port=self.port,
            username=username,
            password=password,
            ca_file=tls.ca_cert if tls else None,
            certfile=tls.client_cert if tls and with_cert else None,
            keyfile=tls.client_key if tls and with_cert else None,
        )

    def _prepare_first_start(self) -> None:
        if self.use_tls:
            self.tls_material = make_ca_and_server_cert(self._directory / "tls")
        if self.password_file is not None:
            write_password_file(self.password_file, self.users)
        if self.acl_file is not None and self.acl is not None:
            self.acl_file.write_text(self.acl if self.acl.endswith("\n") else self.acl + "\n")
        if self.persistence:
            self.persistence_dir.mkdir(exist_ok=True, mode=0o700)

    def _pick_new_ports(self) -> None:
        self.port = free_port(self.host)

    def _argv(self, exe: str) -> list[str]:
        return [exe, "-c", str(self.config_path)]

    async def _probe(self) -> bool:
        return await _mqtt_answers(self.host, self.port, self._probe_tls())

    def _probe_tls(self) -> ssl.SSLContext | None:
        """TLS for the readiness probe: any server certificate, our client certificate."""
        if self.tls_material is None:
            return None
        if self._probe_context is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.load_cert_chain(self.tls_material.client_cert, self.tls_material.client_key)
            self._probe_context = ctx
        return self._probe_context

    def _write_config(self) -> None:
        def flag(value: bool) -> str:
            return "true" if value else "false"

        lines = ["# Written by wardwatch.core.servers; rewritten on every start."]
        if os.geteuid() == 0:
            lines += [
                "# Started as root, mosquitto would switch to user `mosquitto`, which cannot use this",
                "# root-owned directory: persistence and the password file would fail. Stay root.",
                "user root",
            ]
        lines += ["per_listener_settings false", f"listener {self.port} {self.host}"]
        if self.tls_material is not None:
            tls = self.tls_material
            lines += [
                f"cafile {tls.ca_cert}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                f"require_certificate {flag(self.require_client_cert)}",
            ]
        lines.append(f"allow_anonymous {flag(self.allow_anonymous)}")
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.bind_client_ids:
            lines += [
                "# The session is named after the user name, whatever client id is sent: no principal can",
                "# take over another's session (and so its connection and queued messages).",
                "use_username_as_clientid true",
            ]
        lines.append(f"persistence {flag(self.persistence)}")
        if self.persistence:
            lines.append(f"persistence_location {self.persistence_dir}/")
            if self.autosave_interval is not None:
                lines.append(f"autosave_interval {self.autosave_interval}")
        lines += [
            "# Deliberate limits: the defaults (1000 queued, 20 in flight) drop messages silently.",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            f"max_inflight_messages {self.max_inflight_messages}",
            "set_tcp_nodelay true",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if self.extra_config:
            lines += ["# extra_config", self.extra_config]
        self.config_path.write_text("\n".join(lines) + "\n")


# --- influxd ------------------------------------------------------------------------------------


async def _http(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, bytes]:
    """A minimal HTTP/1.0 request (no keep-alive, no chunking): returns status and body."""
    head = [f"{method} {target} HTTP/1.0", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in (headers or {}).items()]
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            response = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {status_line[:80]!r}")
    return int(parts[1]), payload


def _toml_string(value: str | Path) -> str:
    return json.dumps(str(value))


class Influxd(_ChildServer):
    """InfluxDB 1.x (``influxd run``) as a child process on free loopback ports; an async context manager.

    The HTTP and the RPC port (8088 by default, which would clash between instances) are both
    free ports. Usage reporting, the internal monitor database, HTTP request logging and
    continuous queries (unless ``continuous_queries``) are off. ``auth`` = (user, password)
    enables authentication and creates that admin user at the first start (also in an existing
    directory that has no user yet); :meth:`ensure_user` adds write-only and read-only users. Data survives
    :meth:`stop`/:meth:`start` and :meth:`kill` (the WAL is synced on every write).
    """

    _name = "influxd"
    _package = "influxdb"

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        http_port: int | None = None,
        rpc_port: int | None = None,
        auth: tuple[str, str] | None = None,
        continuous_queries: bool = False,
        log_level: str = "warn",
        directory: Path | str | None = None,
        keep_directory: bool = False,
        startup_timeout: float = 20.0,
        stop_timeout: float = 15.0,
        binary: str = "influxd",
    ) -> None:
        super().__init__(
            binary=binary,
            directory=directory,
            keep_directory=keep_directory,
            startup_timeout=startup_timeout,
            stop_timeout=stop_timeout,
        )
        self.host = host
        self._ports_given = http_port is not None or rpc_port is not None
        self.http_port = http_port if http_port is not None else free_port(host)
        self.rpc_port = rpc_port if rpc_port is not None else free_port(host)
        self.auth = auth
        self.continuous_queries = continuous_queries
        self.log_level = log_level

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def username(self) -> str | None:
        """The admin user when ``auth`` is on."""
        return self.auth[0] if self.auth else None

    @property
    def password(self) -> str | None:
        """The admin password when ``auth`` is on."""
        return self.auth[1] if self.auth else None

    @property
    def config_path(self) -> Path:
        """The generated ``influxdb.conf`` (rewritten on every start)."""
        return self._directory / "influxdb.conf"

    @property
    def data_dir(self) -> Path:
        """Holds ``meta/``, ``data/`` and ``wal/``."""
        return self._directory / "var"

    def _pick_new_ports(self) -> None:
        self.http_port = free_port(self.host)
        self.rpc_port = free_port(self.host)

    def _argv(self, exe: str) -> list[str]:
        return [exe, "run", "-config", str(self.config_path)]

    async def _probe(self) -> bool:
        try:
            status, _ = await _http(self.host, self.http_port, "GET", "/ping", timeout=1.0)
        except (OSError, TimeoutError):
            return False
        return status == 204

    def _write_config(self) -> None:
        def flag(value: bool) -> str:
            return "true" if value else "false"

        var = self.data_dir
        text = f"""\
# Written by wardwatch.core.servers; rewritten on every start.
reporting-enabled = false
bind-address = {_toml_string(f"{self.host}:{self.rpc_port}")}

[meta]
  dir = {_toml_string(var / "meta")}
  logging-enabled = false

[data]
  dir = {_toml_string(var / "data")}
  wal-dir = {_toml_string(var / "wal")}
  query-log-enabled = false
  trace-logging-enabled = false

[http]
  enabled = true
  bind-address = {_toml_string(f"{self.host}:{self.http_port}")}
  auth-enabled = {flag(self.auth is not None)}
  log-enabled = false
  pprof-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = {flag(self.continuous_queries)}
  log-enabled = false

[logging]
  level = {_toml_string(self.log_level)}
  suppress-logo = true
"""
        self.config_path.write_text(text)

    def _auth_headers(self) -> dict[str, str]:
        if self.auth is None:
            return {}
        token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def query(self, q: str, *, db: str | None = None, use_auth: bool = True) -> dict[str, Any]:
        """POST an InfluxQL statement to ``/query`` (``epoch=ns``) and return the decoded JSON.

        Raises :class:`ServerStartError` if the server answers with an HTTP error or a statement error.
        """
        params = {"q": q, "epoch": "ns", **({"db": db} if db else {})}
        status, body = await _http(
            self.host,
            self.http_port,
            "POST",
            "/query",
            body=urllib.parse.urlencode(params).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                **(self._auth_headers() if use_auth else {}),
            },
        )
        try:
            decoded: dict[str, Any] = json.loads(body) if body else {}
        except ValueError:
            decoded = {"error": body.decode(errors="replace")}
        errors = [r["error"] for r in decoded.get("results", []) if "error" in r]
        if status != 200 or "error" in decoded or errors:
            problem = decoded.get("error") or "; ".join(errors) or body.decode(errors="replace")
            raise ServerStartError(self._name, f"query {q!r} failed: HTTP {status}: {problem}")
        return decoded

    async def create_database(self, name: str) -> None:
        """``CREATE DATABASE`` (a no-op if it exists)."""
        await self.query(f"CREATE DATABASE {json.dumps(name, ensure_ascii=False)}")

    async def ensure_user(
        self, name: str, password: str, *, privilege: Literal["READ", "WRITE", "ALL"], database: str
    ) -> None:
        """Create (or re-password) a non-admin user with ``privilege`` on ``database`` only.

        ``WRITE`` is write-only (ingest: it cannot read or drop anything), ``READ`` read-only
        (dashboards, the console). Needs ``auth`` (an admin) and the database.
        """
        if self.auth is None:
            raise ConfigError("users need authentication: start Influxd with auth=(admin, password)", key="auth")
        user, db = json.dumps(name, ensure_ascii=False), json.dumps(database, ensure_ascii=False)
        secret = _influxql_string(password)
        try:
            await self.query(f"CREATE USER {user} WITH PASSWORD {secret}")
        except ServerStartError as exc:
            if "user already exists" not in str(exc):
                raise
            await self.query(f"SET PASSWORD FOR {user} = {secret}")
        for other in ("READ", "WRITE"):
            if other != privilege:
                with contextlib.suppress(ServerStartError):  # nothing to revoke
                    await self.query(f"REVOKE {other} ON {db} FROM {user}")
        await self.query(f"GRANT {privilege} ON {db} TO {user}")

    async def _after_first_ready(self) -> None:
        if self.auth is None:
            return
        user, password = self.auth
        create = f"CREATE USER {json.dumps(user, ensure_ascii=False)} WITH PASSWORD {_influxql_string(password)}"
        # allowed without credentials only while there is no user at all (also in an existing directory that
        # ran without auth before); if users exist, ours must work
        with contextlib.suppress(ServerStartError):
            await self.query(f"{create} WITH ALL PRIVILEGES", use_auth=False)
        try:
            await self.query("SHOW USERS")
        except ServerStartError as exc:
            raise ServerStartError(
                self._name,
                f"the admin {user!r} cannot log in to the existing data in {self.data_dir} ({exc}); "
                "use that directory's admin password, or a new directory",
            ) from None


def _influxql_string(value: str) -> str:
    """``value`` as a single-quoted InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
