"""mosquitto 2 as a child process: config, password file, ACL, TLS, readiness by MQTT CONNECT."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

from wardwatch.core.config import MqttSettings, Secret
from wardwatch.core.errors import ConfigError
from wardwatch.core.servers.process import ChildOptions, ChildServer, _run_tool, free_port
from wardwatch.core.servers.tls import TlsMaterial, make_ca_and_server_cert

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


class Mosquitto(ChildServer):
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

    The options every server takes (host, binary, directory, timeouts) are :class:`ChildOptions`.
    """

    _name = "mosquitto"
    _package = "mosquitto"

    def __init__(
        self,
        *,
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
        **options: Unpack[ChildOptions],
    ) -> None:
        super().__init__(**options)
        self.port = self._port(port)
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
