"""MQTT messages to InfluxDB points: the point schema and the validating converter.

Point schema (``precision=ms``)::

    vitals,device=D,patient=P,signal=S,ward=W value=72.0,seq=42i,gateway="G"[,quality="a,b"] T
    vitals,device=D,patient=P,signal=S,ward=W absent="nres",seq=42i,gateway="G" T
    device_status,device=D,patient=P,ward=W connected=true,gateway="G",role="...",seq=1i[,battery=80i,...] T

The series is (measurement, ward, patient, device, signal) and the timestamp is the sample's own
``t`` in ms, so a redelivered message rewrites exactly the same points: the database holds each
sample once, however often it arrives. The gateway is a field, not a tag, so that a sample
forwarded by two gateways (failover) is still one point. Two samples of one series with the same
millisecond are one point (the later wins): the gateway must give samples distinct times (it
spreads RR intervals of one notification over distinct milliseconds).

A sample without a value stores its ``absent`` reason (``"unspecified"`` if none was given)
instead of ``value``; ``quality`` lists the sample's flags, comma-separated, when it has any.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from wardwatch.core import topics
from wardwatch.core.errors import SchemaError, TopicError
from wardwatch.core.sampletime import EARLIEST_SAMPLE_MS, FUTURE_MARGIN_MS, implausible_time
from wardwatch.core.schema import DeviceStatus, decode, decode_vitals
from wardwatch.ingest.errors import IngestError
from wardwatch.ingest.lineprotocol import FieldValue, encode_fields, series_key

__all__ = ["DEVICE_STATUS_MEASUREMENT", "VITALS_MEASUREMENT", "ImplausibleTimeError", "PointEncoder"]

VITALS_MEASUREMENT: Final = "vitals"
DEVICE_STATUS_MEASUREMENT: Final = "device_status"

_VITALS_PREFIX: Final = f"{topics.ROOT}/{topics.VITALS}/"
_DEVICE_PREFIX: Final = f"{topics.ROOT}/{topics.DEVICE}/"


class ImplausibleTimeError(IngestError, SchemaError):
    """A sample or status is stamped before 2020 or too far ahead of this server's clock (device clock wrong)."""


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class _Route:
    """What a valid vitals topic says, with the constant parts of its lines pre-encoded."""

    gateway: str
    patient: str
    device: str
    signal: str
    prefix: str  # "vitals,device=..,patient=..,signal=..,ward=.. "
    gateway_field: str  # ',gateway="gw-01"'


class PointEncoder:
    """Validate MQTT messages and turn them into line-protocol lines (hot path: :meth:`lines`).

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

    def lines(self, topic: str, payload: bytes) -> list[str]:
        """The lines of one message (ending in ``\\n``)."""
        route = self._routes.get(topic)
        if route is None:
            if not topic.startswith(_VITALS_PREFIX):
                return self._other(topic, payload)
            route = self._route(topic)
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
        prefix = route.prefix
        tail = f",seq={message.seq}i{route.gateway_field} "
        out = []
        for sample in message.samples:
            value = sample.v
            fields = f"value={float(value)!r}" if value is not None else f'absent="{sample.absent or "unspecified"}"'
            if sample.q:
                fields += ',quality="' + ",".join(sample.q) + '"'
            out.append(f"{prefix}{fields}{tail}{sample.t}\n")
        return out

    def _route(self, topic: str) -> _Route:
        parts = topics.parse_topic(topic)
        if not (parts.ward and parts.gateway and parts.patient and parts.device and parts.signal):
            raise TopicError(f"topic {topic!r} lacks a level")
        key = series_key(
            VITALS_MEASUREMENT,
            {"ward": parts.ward, "patient": parts.patient, "device": parts.device, "signal": parts.signal},
        )
        route = _Route(
            gateway=parts.gateway,
            patient=parts.patient,
            device=parts.device,
            signal=parts.signal,
            prefix=key + " ",
            gateway_field=f',gateway="{parts.gateway}"',
        )
        if len(self._routes) >= self._route_cache_size:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _other(self, topic: str, payload: bytes) -> list[str]:
        if not topic.startswith(_DEVICE_PREFIX):
            raise TopicError(f"topic {topic!r} is neither a vitals nor a device status topic")
        parts = topics.parse_topic(topic)
        message = decode(payload)
        if not isinstance(message, DeviceStatus):
            raise SchemaError(f"a {type(message).__name__} message on device status topic")
        if (message.gateway, message.patient, message.device) != (parts.gateway, parts.patient, parts.device):
            raise SchemaError("payload ids do not match its topic")
        self._check_time(message.t, message.t)
        assert parts.ward is not None
        fields: list[tuple[str, FieldValue]] = [
            ("connected", message.connected),
            ("gateway", message.gateway),
            ("role", str(message.role)),
            ("seq", message.seq),
            ("malformed_total", message.malformed_total),
        ]
        optional: list[tuple[str, FieldValue | None]] = [
            ("battery", message.battery),
            ("rssi", message.rssi),
            ("reason", message.reason),
        ]
        fields += [(k, v) for k, v in optional if v is not None]
        key = series_key(
            DEVICE_STATUS_MEASUREMENT, {"ward": parts.ward, "patient": message.patient, "device": message.device}
        )
        return [f"{key} {encode_fields(fields)} {message.t}\n"]
