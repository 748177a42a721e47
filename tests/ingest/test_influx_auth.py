"""InfluxDB with authentication: an admin makes the schema, ingest writes as a write-only user, readers read.

Issue 12: ``wardwatch up``'s InfluxDB had no authentication (anyone on the host could write or drop
measurements) and its downsampling continuous query never ran. Here, against a real influxd with auth
and continuous queries on: ``wardwatch ingest schema`` (as the admin) makes database, policies and
the continuous query; ingest stores a stream as user ``ingest`` (WRITE only); the continuous query
fills the downsampled policy (``RESAMPLE EVERY 1s``); nobody without credentials can write, the
reader cannot write and ingest cannot read or drop.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import sys
import time
from pathlib import Path

import aiohttp

from wardwatch.core.config import Secret
from wardwatch.core.servers import Influxd, Mosquitto, wait_for
from wardwatch.ingest.bench import make_stream
from wardwatch.ingest.cli import main
from wardwatch.ingest.config import InfluxSettings, IngestConfig
from wardwatch.ingest.testing import (
    DATABASE,
    TIMEOUT,
    as_toml,
    count,
    ingest_config,
    publish_all,
    publish_kits_for,
    running_ingest,
)


def line() -> bytes:
    """One point, now (inside the raw policy's retention)."""
    return f"vitals,patient=p-x,signal=spo2 value=70 {time.time_ns()}\n".encode()


def basic(user: tuple[str, str] | None) -> dict[str, str]:
    if user is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()}


async def write_as(influxd: Influxd, user: tuple[str, str] | None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{influxd.url}/write", params={"db": DATABASE}, data=line(), headers=basic(user)) as response,
    ):
        return response.status


async def query_as(influxd: Influxd, user: tuple[str, str], q: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{influxd.url}/query", data={"q": q, "db": DATABASE}, headers=basic(user)) as response,
    ):
        return response.status, await response.text()


async def test_write_only_ingest_read_only_reader_and_no_anonymous_writes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    admin = ("admin", secrets.token_urlsafe(16))
    ingest_user = ("ingest", secrets.token_urlsafe(16))
    reader = ("reader", secrets.token_urlsafe(16))
    async with Influxd(directory=tmp_path / "influxd", auth=admin, continuous_queries=True) as influxd:
        await influxd.create_database(DATABASE)
        await influxd.ensure_user(*ingest_user, privilege="WRITE", database=DATABASE)
        await influxd.ensure_user(*reader, privilege="READ", database=DATABASE)

        config = ingest_config(
            mosquitto,
            influxd,
            username=ingest_user[0],
            password=Secret(ingest_user[1]),
            create_schema=False,
            downsample_every="1s",
            downsample_resample_for="10s",
        )
        # the schema, made once by the admin through the command line (credentials from the environment)
        config_file = tmp_path / "ingest.toml"
        config_file.write_text(as_toml(config))
        schema = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wardwatch.core",
            "ingest",
            "schema",
            "--config",
            str(config_file),
            env={**os.environ, "WARDWATCH_INFLUX__USERNAME": admin[0], "WARDWATCH_INFLUX__PASSWORD": admin[1]},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await schema.communicate()
        assert schema.returncode == 0, err.decode()
        assert b'"downsampled_measurement": "vitals_1s"' in out
        # as ingest itself (write-only) the same command is refused
        refused = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wardwatch.core", "ingest", "schema", "--config", str(config_file),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await refused.communicate()
        assert refused.returncode == 1, err.decode()
        assert b"not authorized" in err, err.decode()

        messages, samples = make_stream(400, 2, start_ms=time.time_ns() // 1_000_000 - 3000)
        await asyncio.to_thread(publish_kits_for, mosquitto, messages)
        async with running_ingest(config) as ingestor:
            await asyncio.to_thread(publish_all, mosquitto, messages)

            async def stored() -> bool:
                return await count(influxd) == samples

            await wait_for(stored, TIMEOUT, what=f"{samples} samples stored by the write-only user")
            await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="every batch acknowledged")
            assert ingestor.metrics.value("points_written_total") == samples
            stored_at = time.monotonic()

            async def downsampled() -> bool:
                status, text = await query_as(influxd, reader, 'SELECT count("mean") FROM "downsampled"."vitals_1s"')
                assert status == 200, text
                return '"series"' in text

            await wait_for(downsampled, TIMEOUT, interval=0.2, max_interval=0.5, what="the continuous query ran")
            print(f"downsampled points readable {time.monotonic() - stored_at:.2f} s after the raw ones")

        assert await write_as(influxd, None) == 401
        assert await write_as(influxd, reader) == 403
        assert await write_as(influxd, ingest_user) == 204
        for statement in ("SELECT count(value) FROM vitals", 'DROP MEASUREMENT "vitals"', "SHOW USERS"):
            status, text = await query_as(influxd, ingest_user, statement)
            assert status == 403, (statement, text)
        status, text = await query_as(influxd, reader, 'DROP MEASUREMENT "vitals"')
        assert status == 403, text
        assert await count(influxd) == samples + 1  # the one write ingest's user made above


def test_schema_command_refuses_the_v2_api(tmp_path: Path) -> None:
    config = IngestConfig(influx=InfluxSettings(api="v2", token=Secret("t"), org="o"))
    path = tmp_path / "ingest.toml"
    path.write_text(as_toml(config))
    assert main(["schema", "--config", str(path)]) == 2
