"""Backfill from a real influxd (filled by the real ingest) into the real FHIR server: same windows, no duplicates."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from wardwatch.core.servers import Influxd, Mosquitto, wait_for
from wardwatch.fhir.cli import main
from wardwatch.fhir.client import FhirClient
from wardwatch.fhir.config import FhirConfig, InfluxSettings
from wardwatch.fhir.exporter import Exporter
from wardwatch.fhir.testing import FhirTestServer, fhir_config, publish_all, vitals_stream
from wardwatch.ingest.testing import count, ingest_config, publish_kits_for, running_ingest

INTERVAL_S = 10
TIMEOUT = 60.0


def _start_ms() -> int:
    now = time.time_ns() // 1_000_000 - 3_600_000
    return now - now % (INTERVAL_S * 1000)


async def _identifiers(server: FhirTestServer) -> Counter[str]:
    return Counter(o["identifier"][0]["value"] for o in await server.search("Observation"))


async def test_backfill_matches_live_export_and_never_duplicates(
    mosquitto: Mosquitto, influxd: Influxd, fhir_server: FhirTestServer, tmp_path: Path
) -> None:
    start = _start_ms()
    seconds = 60
    messages = vitals_stream(2, seconds, start)
    await asyncio.to_thread(publish_kits_for, mosquitto, messages)  # ingest stores only bound sources
    config: FhirConfig = fhir_config(mosquitto, fhir_server, client_id="fhir-live")
    config = FhirConfig(
        mqtt=config.mqtt,
        fhir=config.fhir,
        export=config.export,
        metrics=config.metrics,
        influx=InfluxSettings(url=influxd.url, database="wardwatch"),
    )
    async with (
        running_ingest(ingest_config(mosquitto, influxd)) as ingestor,
        FhirClient(config.fhir) as client,
        Exporter(config, client) as exporter,
    ):
        await exporter.wait_ready(TIMEOUT)
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await wait_for(lambda: exporter.in_flight == 0 and exporter.idle(), TIMEOUT, what="the live export")
        await wait_for(lambda: ingestor.in_flight == 0, TIMEOUT, what="ingest")
    assert await count(influxd) == len(messages)
    live = await _identifiers(fhir_server)
    assert len(live) == 2 * 4 * seconds // INTERVAL_S

    config_file = tmp_path / "fhir.toml"
    config_file.write_text(
        f'[fhir]\nurl = "{fhir_server.url}"\n[export]\ninterval_s = {INTERVAL_S}\n'
        f'[influx]\nurl = "{influxd.url}"\n[mqtt]\ntls = false\n',
        encoding="utf-8",
    )
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000))
    end_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start / 1000 + seconds))
    argv = ["backfill", "--config", str(config_file), "--patient", "p-001", "--from", iso, "--to", end_iso]
    assert await asyncio.to_thread(main, argv) == 0
    assert await _identifiers(fhir_server) == live  # the same windows: nothing new, nothing twice

    # A server that has nothing yet gets exactly the live export's Observations of that patient.
    async with FhirTestServer(directory=tmp_path / "fresh") as fresh:
        config_file.write_text(config_file.read_text().replace(fhir_server.url, fresh.url), encoding="utf-8")
        for _ in range(2):
            assert await asyncio.to_thread(main, argv) == 0
        backfilled = await _identifiers(fresh)
        assert backfilled == Counter({k: 1 for k in live if k.startswith("p-001/")})
        theirs = {o["identifier"][0]["value"]: o["valueQuantity"] for o in await fresh.search("Observation")}
        ours = {o["identifier"][0]["value"]: o["valueQuantity"] for o in await fhir_server.search("Observation")}
        assert all(ours[k] == v for k, v in theirs.items())


def test_backfill_says_what_is_wrong_with_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["backfill", "--config", "x.toml", "--patient", "p-1", "--from", "2026-12-04T08:00", "--to", "now"])
    assert "add Z for UTC" in capsys.readouterr().err


def test_backfill_without_influxdb_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable InfluxDB is an error message and exit 2, not a traceback."""
    config_file = tmp_path / "fhir.toml"
    config_file.write_text('[influx]\nurl = "http://127.0.0.1:9"\n', encoding="utf-8")
    argv = ["backfill", "--config", str(config_file), "--patient", "p-1", "--from", "2026-12-04T08:00Z"]
    assert main([*argv, "--to", "2026-12-04T09:00Z"]) == 2
    assert "cannot query InfluxDB" in capsys.readouterr().err
