"""Where batches of points go: InfluxDB's v1 ``/write`` API or the v2 API via influxdb-client.

A sink takes :class:`~wardwatch.ingest.points.Point` values and owns their encoding (both InfluxDB sinks:
line protocol, :class:`~wardwatch.ingest.lineprotocol.LineEncoder`), so another store is another
:class:`Sink`. :meth:`~Sink.write` returns ``None`` when the points are stored and a reason string when
the store *rejected* some of them (field type conflict, a point line protocol cannot carry, beyond
retention, request too large): the caller splits the batch to find them. Everything else that fails
(network, 5xx, timeouts, authentication, a missing database) raises :class:`SinkUnavailableError`: retry later.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self

import aiohttp
import msgspec

from wardwatch.ingest.config import InfluxSettings
from wardwatch.ingest.errors import IngestError
from wardwatch.ingest.lineprotocol import LineEncoder, LineProtocolError
from wardwatch.ingest.points import VITALS_MEASUREMENT, Point

__all__ = ["SchemaSetupError", "Sink", "SinkUnavailableError", "V1Sink", "V2Sink", "make_sink"]

_log = logging.getLogger(__name__)

#: Statuses with which InfluxDB rejects (some) points for good: retrying the same body cannot help.
REJECT_STATUSES: Final = frozenset({400, 413, 422})


class SinkUnavailableError(IngestError):
    """The database cannot take writes now (down, slow, 5xx, auth, missing database); retry later."""

    def __init__(self, problem: str, *, missing_database: bool = False) -> None:
        self.problem = problem
        self.missing_database = missing_database
        super().__init__(problem)


class SchemaSetupError(IngestError):
    """InfluxDB refused a schema statement (e.g. no ``CREATE DATABASE`` on a 2.x compatibility API)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class Sink(Protocol):
    """A store of points; an async context manager."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def ensure_schema(self) -> None:
        """Create what writes need (database, retention policies, downsampling), idempotently."""

    async def write(self, points: Sequence[Point]) -> str | None:
        """Store ``points`` (idempotently: a point written again is the same point); ``None`` if stored, else
        why the store rejected some of them."""

    def describe(self, point: Point) -> bytes:
        """``point`` as this sink sends it, for a dead letter (never raises)."""


class _LineProtocolSink:
    """What both InfluxDB sinks share: points to line protocol."""

    def __init__(self) -> None:
        self._lines = LineEncoder()

    def _body(self, points: Sequence[Point]) -> bytes | str:
        """The request body, or why a point cannot be written (a rejection: the caller isolates the point)."""
        try:
            return self._lines.body(points)
        except LineProtocolError as exc:
            return f"not writable as line protocol: {exc}"

    def describe(self, point: Point) -> bytes:
        """The point's line, or its JSON where line protocol cannot carry it."""
        try:
            return self._lines.line(point).encode()
        except LineProtocolError:
            return msgspec.json.encode(point.as_builtins())


def _error_text(status: int, body: bytes) -> str:
    text = body.decode(errors="replace").strip()
    try:
        decoded = json.loads(text)
    except ValueError:
        decoded = None
    if isinstance(decoded, dict):
        text = str(decoded.get("error") or decoded.get("message") or text)
    return f"HTTP {status}: {text[:500]}"


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class V1Sink(_LineProtocolSink):
    """InfluxDB 1.x ``/write`` and ``/query`` (also served by 2.x and 3.x for compatibility).

    Schema on start: the database, a default retention policy ``raw_policy`` (``raw_retention``), a
    ``downsampled_policy`` (``downsampled_retention``) and a continuous query that writes per-series
    ``mean``/``min``/``max``/``count`` of ``value`` every ``downsample_every`` into measurement
    ``vitals_<every>`` there, re-computing the last ``downsample_resample_for`` so late (backfilled
    or redelivered) samples are counted. Continuous queries exist on 1.x only.
    """

    def __init__(self, settings: InfluxSettings) -> None:
        super().__init__()
        self.settings = settings
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if settings.token is not None:
            headers["Authorization"] = f"Token {settings.token.reveal()}"
        elif settings.username is not None:
            password = settings.password.reveal() if settings.password is not None else ""
            basic = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        if settings.gzip:
            headers["Content-Encoding"] = "gzip"
        self._headers = headers
        self._write_url = f"{settings.url.rstrip('/')}/write"
        self._query_url = f"{settings.url.rstrip('/')}/query"
        self._params = {"db": settings.database, "rp": settings.raw_policy, "precision": "ms"}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s),
            connector=aiohttp.TCPConnector(limit=4),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def write(self, points: Sequence[Point]) -> str | None:
        """POST the points' lines to ``/write?db=..&rp=..&precision=ms``."""
        assert self._session is not None, "use the sink as an async context manager"
        body = self._body(points)
        if isinstance(body, str):
            return body
        data = gzip.compress(body, compresslevel=1) if self.settings.gzip else body
        try:
            async with self._session.post(
                self._write_url, params=self._params, data=data, headers=self._headers
            ) as response:
                status = response.status
                if status == 204:
                    return None
                text = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailableError(f"InfluxDB at {self.settings.url} unreachable: {exc!r}") from None
        reason = _error_text(status, text)
        if status in REJECT_STATUSES:
            return reason
        if status == 404 and b"database not found" in text:
            raise SinkUnavailableError(f"{reason} (will create it)", missing_database=True)
        if status in (401, 403):
            reason += " (check influx.username/password or influx.token)"
        raise SinkUnavailableError(reason)

    async def query(self, statement: str) -> dict[str, Any]:
        """Run InfluxQL through ``POST /query``.

        Raises :class:`SinkUnavailableError` if InfluxDB cannot answer (retry), :class:`SchemaSetupError`
        if it refuses the statement.
        """
        assert self._session is not None, "use the sink as an async context manager"
        headers = {k: v for k, v in self._headers.items() if k == "Authorization"}
        try:
            async with self._session.post(
                self._query_url, data={"q": statement, "db": self.settings.database}, headers=headers
            ) as response:
                status, text = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailableError(f"InfluxDB at {self.settings.url} unreachable: {exc!r}") from None
        try:
            decoded: dict[str, Any] = json.loads(text)
        except ValueError:
            decoded = {"error": text.decode(errors="replace")}
        errors = [r["error"] for r in decoded.get("results", []) if "error" in r]
        if status != 200 or "error" in decoded or errors:
            detail = decoded.get("error") or "; ".join(errors)
            problem = f"InfluxQL {statement.split(' ON ')[0]!r} failed: HTTP {status}: {detail}"
            if status >= 500 or status in (401, 403):
                raise SinkUnavailableError(problem)
            raise SchemaSetupError(problem)
        return decoded

    async def _create_or_alter_policy(self, name: str, duration: str, *, default: bool) -> None:
        s = self.settings
        spec = f"{_quote(name)} ON {_quote(s.database)} DURATION {duration} REPLICATION 1"
        suffix = " DEFAULT" if default else ""
        try:
            await self.query(f"CREATE RETENTION POLICY {spec}{suffix}")
        except SchemaSetupError as exc:
            if "already exists" not in exc.problem:
                raise
            await self.query(
                f"ALTER RETENTION POLICY {_quote(name)} ON {_quote(s.database)} DURATION {duration}{suffix}"
            )

    @property
    def downsampled_measurement(self) -> str:
        """Where the continuous query writes, e.g. ``vitals_1m``."""
        return f"{VITALS_MEASUREMENT}_{self.settings.downsample_every}"

    async def ensure_schema(self) -> None:
        """Create database, policies and the continuous query if missing; align changed durations."""
        s = self.settings
        if not s.create_schema:
            return
        db = _quote(s.database)
        await self.query(f"CREATE DATABASE {db}")
        await self._create_or_alter_policy(s.raw_policy, s.raw_retention, default=True)
        await self._create_or_alter_policy(s.downsampled_policy, s.downsampled_retention, default=False)
        name = _quote(f"{VITALS_MEASUREMENT}_downsample_{s.downsample_every}")
        # Names come from validated settings and are quoted; nothing here comes from messages.
        select = (
            'SELECT mean("value") AS "mean", min("value") AS "min", max("value") AS "max", count("value") AS "count"'  # noqa: S608
            f" INTO {db}.{_quote(s.downsampled_policy)}.{_quote(self.downsampled_measurement)}"
            f" FROM {db}.{_quote(s.raw_policy)}.{_quote(VITALS_MEASUREMENT)}"
            f" GROUP BY time({s.downsample_every}), *"
        )
        create = (
            f"CREATE CONTINUOUS QUERY {name} ON {db}"
            f" RESAMPLE EVERY {s.downsample_every} FOR {s.downsample_resample_for} BEGIN {select} END"
        )
        try:
            await self.query(create)
        except SchemaSetupError as exc:
            if "already exists" not in exc.problem:
                raise
            await self.query(f"DROP CONTINUOUS QUERY {name} ON {db}")
            await self.query(create)


class V2Sink(_LineProtocolSink):
    """InfluxDB 2.x/3.x ``/api/v2/write`` through influxdb-client's asyncio client (token, org, bucket).

    The bucket (with its retention period) is the operator's to create, and downsampling is a 2.x
    task or a 3.x processing-engine job: the v2 API offers no portable way to set these up.
    """

    def __init__(self, settings: InfluxSettings) -> None:
        super().__init__()
        self.settings = settings
        self._client: Any = None
        self._write: Any = None

    async def __aenter__(self) -> Self:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        s = self.settings
        assert s.token is not None
        self._client = InfluxDBClientAsync(
            url=s.url, token=s.token.reveal(), org=s.org, timeout=int(s.timeout_s * 1000), enable_gzip=s.gzip
        )
        self._write = self._client.write_api()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ensure_schema(self) -> None:
        """Nothing to create through the v2 API (see the class docstring)."""

    async def write(self, points: Sequence[Point]) -> str | None:
        """Write the points' lines through ``WriteApiAsync.write(bucket, org, body, precision=ms)``."""
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        s = self.settings
        body = self._body(points)
        if isinstance(body, str):
            return body
        try:
            await self._write.write(bucket=s.bucket, org=s.org, record=body, write_precision=WritePrecision.MS)
        except ApiException as exc:
            status = int(exc.status or 0)
            raw = exc.body if isinstance(exc.body, bytes) else str(exc.body or exc.reason or "").encode()
            reason = _error_text(status, raw)
            if status in REJECT_STATUSES:
                return reason
            raise SinkUnavailableError(reason, missing_database=status == 404) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SinkUnavailableError(f"InfluxDB at {s.url} unreachable: {exc!r}") from None
        return None


def make_sink(settings: InfluxSettings) -> Sink:
    """The sink ``settings.api`` names."""
    return V1Sink(settings) if settings.api == "v1" else V2Sink(settings)
