"""``wardwatch fhir backfill``: one patient's vitals for a time range, from InfluxDB into the FHIR server.

The range is widened to whole intervals, so every window is the one the live exporter builds from the
same samples: the same Observation identifiers, so backfill after (or before, or during) live export
creates nothing twice. Reads the raw retention policy that ingest writes (``vitals`` measurement) through
InfluxDB's 1.x ``/query`` API.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import msgspec

from wardwatch.core.schema import AbsentReason, Quality, Sample, Signal
from wardwatch.fhir.client import FhirClient, FhirUnavailableError
from wardwatch.fhir.config import FhirConfig, InfluxSettings
from wardwatch.fhir.errors import FhirError
from wardwatch.fhir.mapping import EXPORTED_SIGNALS, BundleBuilder, Window, series_signal, window_start

__all__ = ["BackfillReport", "backfill", "read_windows"]

_log = logging.getLogger(__name__)

_QUALITIES: Final = {q.value: q for q in Quality}
_ABSENT: Final = {a.value: a for a in AbsentReason}


class BackfillError(FhirError):
    """InfluxDB could not be read."""


@dataclass(slots=True)
class BackfillReport:
    """What a backfill did (printed as JSON)."""

    patient: str
    start_ms: int
    end_ms: int
    samples: int = 0
    windows: int = 0
    observations: int = 0
    transactions: int = 0
    created: int = 0
    already_there: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def read_windows(
    influx: InfluxSettings, patient: str, start_ms: int, end_ms: int, interval_s: int
) -> tuple[list[Window], int]:
    """The patient's windows of exported signals in ``[start_ms, end_ms)``, and the number of samples."""
    query = (
        f'SELECT "value", "absent", "quality", "gateway" FROM "{influx.retention_policy}"."vitals" '  # noqa: S608
        f'WHERE "patient" = {_quote(patient)} AND time >= {start_ms}ms AND time < {end_ms}ms '
        f'AND "signal" =~ /^({"|".join(sorted(EXPORTED_SIGNALS))})$/ GROUP BY "device", "signal"'
    )
    params = {"db": influx.database, "q": query, "epoch": "ms"}
    password = influx.password.reveal() if influx.password is not None else ""
    auth = aiohttp.BasicAuth(influx.username, password) if influx.username else None
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=influx.timeout_s)) as session,
            session.post(influx.url.rstrip("/") + "/query", data=params, auth=auth) as response,
        ):
            body = await response.json(content_type=None)
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise BackfillError(f"cannot query InfluxDB at {influx.url}: {exc!r}") from exc
    results = body.get("results", [{}]) if isinstance(body, dict) else [{}]
    problem = body.get("error") if isinstance(body, dict) else None
    problem = problem or next((r["error"] for r in results if "error" in r), None)
    if status != 200 or problem:
        raise BackfillError(f"InfluxDB answered {status}: {problem or body}")
    windows: dict[tuple[str, Signal, int], Window] = {}
    samples = 0
    for series in results[0].get("series", []):
        device, signal = series["tags"]["device"], Signal(series["tags"]["signal"])
        columns = series["columns"]
        for row in series["values"]:
            point = dict(zip(columns, row, strict=True))
            t = int(point["time"])
            flags = tuple(_QUALITIES[q] for q in (point.get("quality") or "").split(",") if q in _QUALITIES)
            value = point.get("value")
            absent = _ABSENT.get(point.get("absent") or "")
            sample = Sample(t=t, v=float(value) if value is not None else None, q=flags, absent=absent)
            start = window_start(t, interval_s)
            key = (device, series_signal(signal), start)
            window = windows.get(key)
            if window is None:
                gateway = point.get("gateway") or "unknown"
                window = windows[key] = Window(patient, device, gateway, key[1], start, interval_s)
            window.put(signal, sample)
            samples += 1
    return sorted(windows.values(), key=lambda w: (w.start, w.device, w.signal)), samples


async def _post(client: FhirClient, bundle: dict[str, Any], config: FhirConfig) -> Any:
    delay = config.fhir.retry_min_s
    while True:
        try:
            return await client.transaction(bundle)
        except FhirUnavailableError as exc:
            _log.warning("FHIR transaction failed, retrying in %.1f s: %s", delay, exc)
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, config.fhir.retry_max_s)


async def backfill(config: FhirConfig, patient: str, start_ms: int, end_ms: int) -> BackfillReport:
    """Export the patient's intervals overlapping ``[start_ms, end_ms)``; retries while the server is down."""
    interval_ms = config.export.interval_s * 1000
    start = window_start(start_ms, config.export.interval_s)
    end = -(-end_ms // interval_ms) * interval_ms
    report = BackfillReport(patient=patient, start_ms=start, end_ms=end)
    windows, report.samples = await read_windows(config.influx, patient, start, end, config.export.interval_s)
    report.windows = len(windows)
    async with FhirClient(config.fhir) as client:
        pending = list(windows)
        while pending:
            builder = BundleBuilder(config.export)
            taken: list[Window] = []
            while pending:
                trial = BundleBuilder(config.export)
                for window in [*taken, pending[0]]:
                    trial.window(window)
                if taken and len(trial) > config.fhir.max_bundle_entries:
                    break
                taken.append(pending.pop(0))
                builder = trial
            result = await _post(client, builder.bundle(), config)
            report.transactions += 1
            observations = sum(1 for e in builder.entries if e["resource"]["resourceType"] == "Observation")
            if result.accepted:
                report.observations += observations
                for entry, response in zip(builder.entries, result.body.get("entry", []), strict=False):
                    if entry["resource"]["resourceType"] != "Observation":
                        continue
                    if str(response.get("response", {}).get("status", "")).startswith("201"):
                        report.created += 1
                    else:
                        report.already_there += 1
            elif len(taken) > 1:
                pending[:0] = [taken[0]]  # retry one by one: find the window the server refuses
                for window in reversed(taken[1:]):
                    pending.insert(1, window)
                config = _single(config)
            else:
                where = f"{taken[0].device}/{taken[0].signal}/{taken[0].start}"
                report.rejected.append({"window": where, "status": result.status, "outcome": result.body})
    return report


def _single(config: FhirConfig) -> FhirConfig:
    """The same config with the smallest Bundles (one window each), after a rejection."""
    return msgspec.structs.replace(config, fhir=msgspec.structs.replace(config.fhir, max_bundle_entries=4))
