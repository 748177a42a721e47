"""InfluxDB 1.x (``influxd run``) as a child process: config, users, readiness by ``GET /ping``."""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.parse
from pathlib import Path
from typing import Any, Literal, Unpack

from wardwatch.core.errors import ConfigError, ServerStartError
from wardwatch.core.servers.process import ChildOptions, ChildServer, free_port, http_request
from wardwatch.core.tomlfile import toml_value

# --- influxd ------------------------------------------------------------------------------------


class Influxd(ChildServer):
    """InfluxDB 1.x (``influxd run``) as a child process on free loopback ports; an async context manager.

    The HTTP and the RPC port (8088 by default, which would clash between instances) are both
    free ports. Usage reporting, the internal monitor database, HTTP request logging and
    continuous queries (unless ``continuous_queries``) are off. ``auth`` = (user, password)
    enables authentication and creates that admin user at the first start (also in an existing
    directory that has no user yet); :meth:`ensure_user` adds write-only and read-only users. Data survives
    :meth:`stop`/:meth:`start` and :meth:`kill` (the WAL is synced on every write).

    The options every server takes (host, binary, directory, timeouts) are :class:`ChildOptions`.
    """

    _name = "influxd"
    _default_startup_timeout = 20.0
    _default_stop_timeout = 15.0
    _package = "influxdb"

    def __init__(
        self,
        *,
        http_port: int | None = None,
        rpc_port: int | None = None,
        auth: tuple[str, str] | None = None,
        continuous_queries: bool = False,
        log_level: str = "warn",
        **options: Unpack[ChildOptions],
    ) -> None:
        super().__init__(**options)
        self.http_port = self._port(http_port)
        self.rpc_port = self._port(rpc_port)
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
            status, _ = await http_request(self.host, self.http_port, "GET", "/ping", timeout=1.0)
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
bind-address = {toml_value(f"{self.host}:{self.rpc_port}")}

[meta]
  dir = {toml_value(var / "meta")}
  logging-enabled = false

[data]
  dir = {toml_value(var / "data")}
  wal-dir = {toml_value(var / "wal")}
  query-log-enabled = false
  trace-logging-enabled = false

[http]
  enabled = true
  bind-address = {toml_value(f"{self.host}:{self.http_port}")}
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
  level = {toml_value(self.log_level)}
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
        status, body = await http_request(
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
