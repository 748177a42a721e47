"""The NEWS2 score stream into FHIR: valid Observations (Medplum's validator), the total code only when
full, stored once however often a score arrives; through the real broker, exporter and FHIR test server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from wardwatch.core.schema import News2, News2Score, encode
from wardwatch.core.servers import Mosquitto, wait_for
from wardwatch.core.topics import score_topic
from wardwatch.fhir.client import FhirClient
from wardwatch.fhir.config import ExportSettings, FhirConfig
from wardwatch.fhir.exporter import Exporter
from wardwatch.fhir.mapping import UCUM, BundleBuilder
from wardwatch.fhir.testing import FhirTestServer, fhir_config, publish_all

TIMEOUT = 30.0
T0 = 1_764_000_000_000
TOTAL = "1104051000000101"
FULL = News2(score=8, o2=0, spo2=2, pulse=2, respiration=2, systolic=1, consciousness=0, temperature=1, full=True)
PARTIAL = News2(score=4, o2=0, spo2=2, pulse=2, missing=["respiration", "supplemental_o2", "systolic"])


def score(t: int, news2: News2) -> News2Score:
    return News2Score(patient="p-001", ward="ward-a", t=t, news2=news2)


async def test_a_full_score_is_the_news2_total_with_seven_sub_scores_and_valid(fhir_server: FhirTestServer) -> None:
    builder = BundleBuilder(ExportSettings())
    assert builder.news2_score(score(T0, FULL)) == 1
    for entry in builder.entries:
        assert await fhir_server.validate(entry["resource"]) == [], entry["resource"]
    observation = next(e["resource"] for e in builder.entries if e["resource"]["resourceType"] == "Observation")
    assert observation["code"]["coding"][0]["code"] == TOTAL
    assert observation["valueQuantity"] == {"value": 8, "unit": "{score}", "system": UCUM, "code": "{score}"}
    assert [(c["code"]["coding"][0]["code"], c["valueQuantity"]["value"]) for c in observation["component"]] == [
        ("1104301000000104", 2),  # respiration rate
        ("1104311000000102", 2),  # SpO2 scale 1
        ("1104331000000105", 0),  # air or oxygen
        ("1104341000000101", 1),  # systolic blood pressure
        ("1104351000000103", 2),  # pulse
        ("1104361000000100", 0),  # consciousness
        ("1104371000000107", 1),  # temperature
    ]


async def test_a_partial_score_is_never_coded_as_the_total(fhir_server: FhirTestServer) -> None:
    builder = BundleBuilder(ExportSettings())
    builder.news2_score(score(T0, PARTIAL))
    for entry in builder.entries:
        assert await fhir_server.validate(entry["resource"]) == [], entry["resource"]
    observation = next(e["resource"] for e in builder.entries if e["resource"]["resourceType"] == "Observation")
    assert TOTAL not in str(observation)
    assert observation["code"]["coding"][0]["code"] == "news2-partial"
    assert "missing: respiration, supplemental o2, systolic" in observation["code"]["text"]


@contextlib.asynccontextmanager
async def running_exporter(config: FhirConfig) -> AsyncIterator[Exporter]:
    async with FhirClient(config.fhir) as client, Exporter(config, client) as exporter:
        await exporter.wait_ready(TIMEOUT)
        yield exporter


async def test_the_score_stream_is_exported_once_however_often_a_score_arrives(
    mosquitto: Mosquitto, fhir_server: FhirTestServer
) -> None:
    now = time.time_ns() // 1_000_000
    messages = [
        (score_topic("ward-a", "p-001"), encode(score(now - 300_000, PARTIAL))),
        (score_topic("ward-a", "p-001"), encode(score(now, FULL))),
    ]
    messages += messages  # redelivered
    async with running_exporter(fhir_config(mosquitto, fhir_server, client_id="fhir-news2")) as exporter:
        await asyncio.to_thread(publish_all, mosquitto, messages)
        await wait_for(lambda: exporter.metrics.value("messages_acked_total") == len(messages), TIMEOUT)
    found = await fhir_server.search("Observation", code=f"http://snomed.info/sct|{TOTAL}")
    assert [o["valueQuantity"]["value"] for o in found] == [8]
    partial = await fhir_server.search("Observation", code="urn:wardwatch:score|news2-partial")
    assert [o["valueQuantity"]["value"] for o in partial] == [4]
    for observation in found + partial:
        assert await fhir_server.validate(observation) == []
