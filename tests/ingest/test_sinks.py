"""The sinks' HTTP: the v2 sink against a recording aiohttp server, the v1 sink's error mapping against influxd."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import pytest
from aiohttp import web

from wardwatch.core.config import Secret
from wardwatch.core.servers import Influxd, free_port
from wardwatch.ingest.config import InfluxSettings
from wardwatch.ingest.points import Point
from wardwatch.ingest.sinks import SchemaSetupError, SinkUnavailableError, V1Sink, V2Sink

TAGS = (("device", "d"), ("patient", "p"), ("signal", "spo2"), ("ward", "w"))
POINT = Point("vitals", TAGS, {"value": 97.0, "seq": 1, "gateway": "g"}, 1_700_000_000_000)
BODY = b'vitals,device=d,patient=p,signal=spo2,ward=w value=97.0,seq=1i,gateway="g" 1700000000000\n'


@dataclass
class Recorded:
    """Requests the fake InfluxDB 2 received, and what it answers next."""

    requests: list[tuple[str, str, dict[str, str], dict[str, str], bytes]] = field(default_factory=list)
    status: int = 204
    answer: str = ""


@pytest.fixture
async def influx2() -> AsyncIterator[tuple[str, Recorded]]:
    """A fake InfluxDB 2.x ``/api/v2/write`` endpoint that records every request."""
    recorded = Recorded()

    async def write(request: web.Request) -> web.Response:
        body = await request.read()
        recorded.requests.append((request.method, request.path, dict(request.query), dict(request.headers), body))
        return web.Response(status=recorded.status, text=recorded.answer, content_type="application/json")

    app = web.Application()
    app.router.add_post("/api/v2/write", write)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", recorded
    finally:
        await runner.cleanup()


def v2_settings(url: str, **changes: object) -> InfluxSettings:
    return InfluxSettings(api="v2", url=url, token=Secret("s3cr3t-token"), org="hospital", bucket="vitals", **changes)  # type: ignore[arg-type]


async def test_v2_sink_sends_line_protocol_precision_and_token(influx2: tuple[str, Recorded]) -> None:
    url, recorded = influx2
    async with V2Sink(v2_settings(url)) as sink:
        assert await sink.write([POINT]) is None
    [(method, path, query, headers, body)] = recorded.requests
    assert (method, path) == ("POST", "/api/v2/write")
    assert query == {"org": "hospital", "bucket": "vitals", "precision": "ms"}
    assert headers["Authorization"] == "Token s3cr3t-token"
    assert body == BODY


async def test_v2_sink_gzip(influx2: tuple[str, Recorded]) -> None:
    url, recorded = influx2
    async with V2Sink(v2_settings(url, gzip=True)) as sink:
        assert await sink.write([POINT]) is None
    [(_, _, _, headers, body)] = recorded.requests
    assert headers["Content-Encoding"] == "gzip"
    assert body == BODY  # aiohttp decompressed it: valid gzip


async def test_v2_sink_rejections_and_outages(influx2: tuple[str, Recorded]) -> None:
    url, recorded = influx2
    async with V2Sink(v2_settings(url)) as sink:
        recorded.status, recorded.answer = (
            422,
            '{"code":"unprocessable entity","message":"partial write: field type conflict"}',
        )
        assert await sink.write([POINT]) == "HTTP 422: partial write: field type conflict"
        recorded.status, recorded.answer = 400, '{"code":"invalid","message":"unable to parse"}'
        assert "unable to parse" in str(await sink.write([POINT]))
        recorded.status, recorded.answer = 503, '{"message":"busy"}'
        with pytest.raises(SinkUnavailableError):
            await sink.write([POINT])
        recorded.status, recorded.answer = 401, '{"message":"unauthorized access"}'
        with pytest.raises(SinkUnavailableError):
            await sink.write([POINT])
    async with V2Sink(v2_settings(f"http://127.0.0.1:{free_port()}", timeout_s=2.0)) as sink:
        with pytest.raises(SinkUnavailableError):
            await sink.write([POINT])


async def test_v1_sink_against_influxd(influxd: Influxd) -> None:
    now = time.time_ns() // 1_000_000
    point = msgspec.structs.replace(POINT, time=now)
    settings = InfluxSettings(url=influxd.url, database="v1test", gzip=True)
    async with V1Sink(settings) as sink:
        with pytest.raises(SinkUnavailableError) as missing:
            await sink.write([point])
        assert missing.value.missing_database
        await sink.ensure_schema()
        await sink.ensure_schema()  # idempotent
        assert await sink.write([point]) is None
        conflict = msgspec.structs.replace(point, fields={"value": "x"})
        assert "field type conflict" in str(await sink.write([conflict]))
        assert "beyond retention policy" in str(await sink.write([POINT]))  # 2023: older than 30 days
    result = await influxd.query('SELECT "value" FROM "raw"."vitals"', db="v1test")
    assert result["results"][0]["series"][0]["values"] == [[now * 1_000_000, 97.0]]
    await influxd.stop()
    async with V1Sink(settings) as sink:
        with pytest.raises(SinkUnavailableError):
            await sink.write([point])


async def test_a_point_line_protocol_cannot_carry_is_a_rejection_not_a_crash(influx2: tuple[str, Recorded]) -> None:
    """The sink owns the encoding: an unwritable point is refused with a reason (the pipeline isolates it)."""
    url, recorded = influx2
    bad = Point("vitals", (("ward", "w\\"),), {"value": 1.0}, 1_700_000_000_000)  # a tag ending in a backslash
    nan = msgspec.structs.replace(POINT, fields={"value": float("nan")})
    async with V2Sink(v2_settings(url)) as sink:
        assert "ends with a backslash" in str(await sink.write([POINT, bad]))
        assert "not finite" in str(await sink.write([nan]))
        assert recorded.requests == []  # nothing half-sent
        assert sink.describe(POINT) == BODY
        assert msgspec.json.decode(sink.describe(bad)) == {
            "measurement": "vitals",
            "tags": {"ward": "w\\"},
            "fields": {"value": 1.0},
            "time": 1_700_000_000_000,
        }


async def test_refused_schema_statements_do_not_stop_writes(influx2: tuple[str, Recorded]) -> None:
    """A v1-compatibility API without CREATE DATABASE (InfluxDB 2.x/3.x): schema set-up fails, cleanly."""
    url, _ = influx2
    async with V1Sink(InfluxSettings(url=url)) as sink:
        with pytest.raises(SchemaSetupError):
            await sink.ensure_schema()
