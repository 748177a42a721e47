"""MQTT messages to points (measurement, tags, fields, time): the point schema and the validating converter.

A :class:`Point` says nothing of any store's wire format: a sink encodes it (InfluxDB's line protocol in
:mod:`~wardwatch.ingest.lineprotocol`). Point schema, as line protocol (time in ms)::

    vitals,device=D,patient=P,signal=S,ward=W value=72.0,seq=42i,gateway="G"[,quality="a,b"] T
    vitals,device=D,patient=P,signal=S,ward=W absent="nres",seq=42i,gateway="G" T
    device_status,device=D,patient=P,ward=W connected=true,gateway="G",role="...",seq=1i[,battery=80i,...] T
    news2,patient=P,ward=W score=5i,full=false,o2=0i,spo2_scale=1i[,spo2=2i,pulse=1i,...][,missing="a,b"] T

The series is (measurement, ward, patient, device, signal) and the timestamp is the sample's own
``t`` in ms, so a redelivered message rewrites exactly the same points: the database holds each
sample once, however often it arrives. The gateway is a field, not a tag, so that a sample
forwarded by two gateways (failover) is still one point. Two samples of one series with the same
millisecond are one point (the later wins): the gateway must give samples distinct times (it
spreads RR intervals of one notification over distinct milliseconds).

A ``vitals_batch`` (``.../{device}/batch``) gives the same points as its series would alone: one per
sample, tagged with the series' signal, its ``seq`` the series'.

A ``news2`` point is alerting's NEWS2 of a patient at the time it was scored (``score`` topic): the
total, ``full`` (all seven parameters recent), a field per sub-score that was scored, and the missing
parameters comma-separated (absent when full).

A sample without a value stores its ``absent`` reason (``"unspecified"`` if none was given)
instead of ``value``; ``quality`` lists the sample's flags, comma-separated, when it has any.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from wardwatch.core import topics
from wardwatch.core.errors import SchemaError, TopicError
from wardwatch.core.sampletime import EARLIEST_SAMPLE_MS, FUTURE_MARGIN_MS, implausible_time
from wardwatch.core.schema import (
    News2Score,
    Sample,
    decode,
    decode_device_status,
    decode_vitals,
    decode_vitals_batch,
)
from wardwatch.ingest.errors import IngestError

__all__ = [
    "DEVICE_STATUS_MEASUREMENT",
    "NEWS2_MEASUREMENT",
    "VITALS_MEASUREMENT",
    "FieldValue",
    "ImplausibleTimeError",
    "Point",
    "PointEncoder",
    "Tags",
]

FieldValue = float | int | bool | str
#: Tag (key, value) pairs sorted by key; one tuple object is shared by every point of a series.
Tags = tuple[tuple[str, str], ...]

VITALS_MEASUREMENT: Final = "vitals"
DEVICE_STATUS_MEASUREMENT: Final = "device_status"
NEWS2_MEASUREMENT: Final = "news2"

_VITALS_PREFIX: Final = f"{topics.ROOT}/{topics.VITALS}/"
_DEVICE_PREFIX: Final = f"{topics.ROOT}/{topics.DEVICE}/"
_SCORE_PREFIX: Final = f"{topics.ROOT}/{topics.SCORE}/"
_SUB_SCORES: Final = ("respiration", "spo2", "systolic", "pulse", "consciousness", "temperature")


class Point(msgspec.Struct, frozen=True, gc=False):
    """One stored value set: ``measurement``, ``tags`` (the series), ``fields`` and ``time`` (ms since the epoch)."""

    measurement: str
    tags: Tags
    fields: dict[str, FieldValue]
    time: int

    def as_builtins(self) -> dict[str, object]:
        """The point as JSON-ready builtins (tags as an object), for logs and tests."""
        return {"measurement": self.measurement, "tags": dict(self.tags), "fields": self.fields, "time": self.time}


class ImplausibleTimeError(IngestError, SchemaError):
    """A sample or status is stamped before 2020 or too far ahead of this server's clock (device clock wrong)."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Route:
    """What a valid vitals topic says, and the tags of its series (one shared tuple)."""

    gateway: str
    patient: str
    device: str
    signal: str
    tags: Tags
    ward: str = ""
    # a batch topic's series tags, by signal (one shared tuple each)
    series_tags: dict[str, Tags] = field(default_factory=dict)


class PointEncoder:
    """Validate MQTT messages and turn them into :class:`Point` values (hot path: :meth:`points`).

    Raises :class:`~wardwatch.core.errors.SchemaError` or :class:`~wardwatch.core.errors.TopicError`
    saying what is wrong: bad JSON, wrong schema version, impossible values, an unknown topic, or a
    payload whose ids differ from its topic's (a spoofed or misrouted message); and
    :class:`ImplausibleTimeError` for a time stamp before 2020 or more than ``future_margin_ms``
    ahead of ``clock()`` (a message with one such sample is refused whole: its device's clock is wrong).
    """

    def __init__(
        self,
        *,
        route_cache_size: int = 100_000,
        future_margin_ms: int = FUTURE_MARGIN_MS,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        self._routes: dict[str, _Route] = {}
        self._route_cache_size = route_cache_size
        self._future_margin_ms = future_margin_ms
        self._clock = clock

    def _check_time(self, t_min: int, t_max: int) -> None:
        if t_min >= EARLIEST_SAMPLE_MS and t_max <= self._clock() + self._future_margin_ms:
            return  # the hot path: one comparison each
        now = self._clock()
        problem = implausible_time(t_min, now, future_margin_ms=self._future_margin_ms) or implausible_time(
            t_max, now, future_margin_ms=self._future_margin_ms
        )
        if problem is not None:
            raise ImplausibleTimeError(f"device clock wrong: {problem}")

    def points(self, topic: str, payload: bytes) -> list[Point]:
        """The points of one message, one per sample (or one for a device status)."""
        route = self._routes.get(topic)
        if route is None:
            if not topic.startswith(_VITALS_PREFIX):
                return self._other(topic, payload)
            route = self._route(topic)
        if route.signal == topics.BATCH_LEAF:
            return self._batch(route, payload)
        message = decode_vitals(payload)
        if (
            message.patient != route.patient
            or message.device != route.device
            or message.signal != route.signal
            or message.gateway != route.gateway
        ):
            raise SchemaError(
                f"payload ids (gateway {message.gateway}, patient {message.patient}, device {message.device}, "
                f"signal {message.signal}) do not match its topic"
            )
        samples = message.samples
        self._check_time(min(s.t for s in samples), max(s.t for s in samples))
        out: list[Point] = []
        _add_points(out, route.tags, route.gateway, message.seq, samples)
        return out

    def _batch(self, route: _Route, payload: bytes) -> list[Point]:
        """The points of a vitals batch: every sample of every series, as if each series came alone."""
        batch = decode_vitals_batch(payload)
        if batch.patient != route.patient or batch.device != route.device or batch.gateway != route.gateway:
            raise SchemaError(
                f"payload ids (gateway {batch.gateway}, patient {batch.patient}, device {batch.device}) "
                "do not match its topic"
            )
        times = [s.t for series in batch.series for s in series.samples]
        self._check_time(min(times), max(times))
        out: list[Point] = []
        for series in batch.series:
            tags = route.series_tags.get(series.signal)
            if tags is None:
                tags = route.series_tags[series.signal] = _tags(
                    ward=route.ward, patient=route.patient, device=route.device, signal=series.signal
                )
            _add_points(out, tags, route.gateway, series.seq, series.samples)
        return out

    def _route(self, topic: str) -> _Route:
        parts = topics.parse_topic(topic)
        if not (parts.ward and parts.gateway and parts.patient and parts.device and parts.signal):
            raise TopicError(f"topic {topic!r} lacks a level")
        tags = _tags(ward=parts.ward, patient=parts.patient, device=parts.device, signal=parts.signal)
        route = _Route(
            gateway=parts.gateway,
            patient=parts.patient,
            device=parts.device,
            signal=parts.signal,
            tags=tags,
            ward=parts.ward,
        )
        if len(self._routes) >= self._route_cache_size:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _other(self, topic: str, payload: bytes) -> list[Point]:
        if topic.startswith(_SCORE_PREFIX):
            return self._score(topic, payload)
        if not topic.startswith(_DEVICE_PREFIX):
            raise TopicError(f"topic {topic!r} is neither a vitals, a device status nor a score topic")
        parts = topics.parse_topic(topic)
        message = decode_device_status(payload, parts)
        self._check_time(message.t, message.t)
        assert parts.ward is not None
        fields: dict[str, FieldValue] = {
            "connected": message.connected,
            "gateway": message.gateway,
            "role": str(message.role),
            "seq": message.seq,
            "malformed_total": message.malformed_total,
        }
        optional: dict[str, FieldValue | None] = {
            "battery": message.battery,
            "rssi": message.rssi,
            "reason": message.reason,
        }
        fields.update((k, v) for k, v in optional.items() if v is not None)
        tags = _tags(ward=parts.ward, patient=message.patient, device=message.device)
        return [Point(DEVICE_STATUS_MEASUREMENT, tags, fields, message.t)]

    def _score(self, topic: str, payload: bytes) -> list[Point]:
        parts = topics.parse_topic(topic)
        message = decode(payload)
        if not isinstance(message, News2Score):
            raise SchemaError(f"a {type(message).__name__} message on a score topic")
        if (message.ward, message.patient) != (parts.ward, parts.patient):
            raise SchemaError("payload ids (ward, patient) do not match its topic")
        self._check_time(message.t, message.t)
        news2 = message.news2
        fields: dict[str, FieldValue] = {
            "score": news2.score,
            "full": news2.full,
            "o2": news2.o2,
            "spo2_scale": news2.spo2_scale,
        }
        for name in _SUB_SCORES:
            points = getattr(news2, name)
            if points is not None:
                fields[name] = points
        if news2.missing:
            fields["missing"] = ",".join(news2.missing)
        return [Point(NEWS2_MEASUREMENT, _tags(ward=message.ward, patient=message.patient), fields, message.t)]


def _add_points(out: list[Point], tags: Tags, gateway: str, seq: int, samples: tuple[Sample, ...]) -> None:
    for sample in samples:
        value = sample.v
        fields: dict[str, FieldValue] = (
            {"value": float(value)} if value is not None else {"absent": sample.absent or "unspecified"}
        )
        if sample.q:
            fields["quality"] = ",".join(sample.q)
        fields["seq"] = seq
        fields["gateway"] = gateway
        out.append(Point(VITALS_MEASUREMENT, tags, fields, sample.t))


def _tags(**tags: str) -> Tags:
    return tuple(sorted(tags.items()))
