"""Trends from InfluxDB 1.x (read-only user): raw data for an hour, the downsampled policy for 24 h and 7 d.

``wardwatch ingest schema`` keeps raw samples in ``<raw_policy>.vitals`` and a continuous query
writes per-minute ``mean``/``min``/``max`` into ``<downsampled_policy>.vitals_1m``. Long ranges read
those minutes (grouped again to a few hundred points); if the downsampled policy is still empty (a
stack that just started: the continuous query writes each minute once it is over) the raw data
answers instead, and the result says so.
"""

from __future__ import annotations

import base64
import enum
import re
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from wardwatch.console.config import InfluxSettings
from wardwatch.core.ids import ID_PATTERN

__all__ = ["TREND_SIGNALS", "TrendRange", "TrendReader"]

TREND_SIGNALS: Final = ("heart_rate", "spo2", "pulse_rate", "perfusion_index")
_ID_RE: Final = re.compile(ID_PATTERN.removesuffix("$"))


class TrendRange(enum.StrEnum):
    """How far back a trend goes."""

    HOUR = "1h"
    DAY = "24h"
    WEEK = "7d"


@dataclass(frozen=True, slots=True)
class _Plan:
    bucket: str  # InfluxQL GROUP BY time()
    downsampled: bool


_PLANS: Final = {
    TrendRange.HOUR: _Plan("10s", downsampled=False),
    TrendRange.DAY: _Plan("5m", downsampled=True),
    TrendRange.WEEK: _Plan("30m", downsampled=True),
}


class TrendReader:
    """Reads a patient's trends over InfluxDB's HTTP ``/query`` (GET: read-only)."""

    def __init__(self, settings: InfluxSettings, http: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.http = http

    def query_text(self, ward: str, patient: str, span: TrendRange, *, downsampled: bool) -> str:
        """The InfluxQL of one read (identifiers are checked, never taken from free text)."""
        if not (_ID_RE.fullmatch(ward) and _ID_RE.fullmatch(patient)):
            raise ValueError("ward and patient must be wardwatch identifiers")
        s = self.settings
        plan = _PLANS[span]
        if downsampled:
            source = f'"{s.database}"."{s.downsampled_policy}"."{s.downsampled_measurement}"'
            field = 'mean("mean")'
        else:
            source = f'"{s.database}"."{s.raw_policy}"."vitals"'
            field = 'mean("value")'
        signals = "|".join(TREND_SIGNALS)
        return (
            f"SELECT {field} AS v FROM {source} "  # noqa: S608 - identifiers checked above, names validated
            f'WHERE "ward" = \'{ward}\' AND "patient" = \'{patient}\' AND "signal" =~ /^({signals})$/ '
            f'AND time > now() - {span.value} GROUP BY time({plan.bucket}), "signal" fill(none)'
        )

    async def series(self, text: str) -> list[dict[str, Any]]:
        """The series of one InfluxQL read (``RuntimeError`` with InfluxDB's words when it refuses)."""
        s = self.settings
        params = {"db": s.database, "q": text, "epoch": "ms"}
        headers = {}
        if s.username:
            credentials = f"{s.username}:{s.password.reveal() if s.password else ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode()
        timeout = aiohttp.ClientTimeout(total=s.timeout_s)
        async with self.http.get(f"{s.url}/query", params=params, headers=headers, timeout=timeout) as response:
            body: dict[str, Any] = await response.json(content_type=None)
            if response.status != 200:
                raise RuntimeError(f"InfluxDB answered {response.status}: {body.get('error', body)}")
        found: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise RuntimeError(f"InfluxDB: {result['error']}")
            found += result.get("series", [])
        return found

    async def _query(self, text: str) -> dict[str, list[list[float]]]:
        series: dict[str, list[list[float]]] = {}
        for item in await self.series(text):
            signal = item.get("tags", {}).get("signal")
            if signal in TREND_SIGNALS:
                series[signal] = [[row[0], row[1]] for row in item.get("values", []) if row[1] is not None]
        return series

    async def read(self, ward: str, patient: str, span: TrendRange) -> dict[str, Any]:
        """``{range, source, bucket, series: {signal: [[t_ms, value], ...]}}``."""
        plan = _PLANS[span]
        source = "downsampled" if plan.downsampled else "raw"
        series = await self._query(self.query_text(ward, patient, span, downsampled=plan.downsampled))
        if plan.downsampled and not series:
            series = await self._query(self.query_text(ward, patient, span, downsampled=False))
            source = "raw (no downsampled data yet)"
        return {"range": span.value, "source": source, "bucket": plan.bucket, "series": series}
