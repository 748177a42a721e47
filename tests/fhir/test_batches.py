"""Vitals batches in the FHIR exporter: the same Observations as the single messages they carry."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from wardwatch.core.schema import Series, Vitals, VitalsBatch, decode, encode
from wardwatch.core.servers import Mosquitto, wait_for
from wardwatch.core.testing import wait_exactly
from wardwatch.core.topics import vitals_batch_topic
from wardwatch.fhir.client import FhirClient
from wardwatch.fhir.exporter import Exporter
from wardwatch.fhir.testing import DEVICES, FhirTestServer, fhir_config, publish_all, vitals_stream

TIMEOUT = 60.0
INTERVAL_S = 10
WARD = "ward-a"


def _start_ms() -> int:
    now = time.time_ns() // 1_000_000 - 3_600_000
    return now - now % (INTERVAL_S * 1000)


def as_batches(messages: list[tuple[str, bytes]], seconds_per_batch: int) -> list[tuple[str, bytes]]:
    """The single messages regrouped as the gateway would: one batch per device and ``seconds_per_batch``."""
    groups: dict[tuple[str, str, str, int], dict[str, list[Vitals]]] = {}  # insertion order: time order
    for _, payload in messages:
        vitals = decode(payload)
        assert isinstance(vitals, Vitals)
        window = vitals.samples[0].t // (seconds_per_batch * 1000)
        groups.setdefault((vitals.gateway, vitals.patient, vitals.device, window), {}).setdefault(
            vitals.signal, []
        ).append(vitals)
    out = []
    for (gateway, patient, device, _), by_signal in groups.items():
        series = tuple(
            Series(signal=group[0].signal, seq=group[0].seq, samples=tuple(s for v in group for s in v.samples))
            for group in by_signal.values()
        )
        batch = VitalsBatch(patient=patient, device=device, gateway=gateway, series=series)
        out.append((vitals_batch_topic(WARD, gateway, patient, device), encode(batch)))
    return out


async def test_batches_become_the_observations_their_single_messages_would(
    mosquitto: Mosquitto, fhir_server: FhirTestServer
) -> None:
    patients, seconds = 2, 60
    batches = as_batches(vitals_stream(patients, seconds, _start_ms()), seconds_per_batch=7)
    config = fhir_config(mosquitto, fhir_server)
    async with FhirClient(config.fhir) as client, Exporter(config, client) as exporter:
        await exporter.wait_ready(TIMEOUT)
        await asyncio.to_thread(publish_all, mosquitto, batches)

        async def stored() -> int:
            return len(await fhir_server.search("Observation", _elements="id"))

        expected = patients * sum(len(signals) for _, _, signals in DEVICES) * (seconds // INTERVAL_S)
        await wait_exactly(stored, expected, TIMEOUT, "Observations", interval=0.1)
        await wait_for(lambda: exporter.in_flight == 0, TIMEOUT, what="every batch acknowledged")
        assert exporter.metrics.value("messages_acked_total") == len(batches)
    observations = await fhir_server.search("Observation")
    assert max(Counter(o["identifier"][0]["value"] for o in observations).values()) == 1
    (patient,) = await fhir_server.search("Patient", identifier="urn:wardwatch:patient|p-001")
    heart_rates = await fhir_server.search(
        "Observation", subject=f"Patient/{patient['id']}", code="http://loinc.org|8867-4"
    )
    assert {o["valueQuantity"]["value"] for o in heart_rates} == {72, 70}  # as from the single messages
