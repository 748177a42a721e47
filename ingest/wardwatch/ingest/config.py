"""Settings of ``wardwatch ingest`` (TOML file + ``WARDWATCH_*`` environment overrides)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Final, Literal

import msgspec

from wardwatch.core import config as core_config
from wardwatch.core import topics
from wardwatch.core.config import MqttSettings, Secret

__all__ = [
    "BatchSettings",
    "InfluxSettings",
    "IngestConfig",
    "MetricsSettings",
    "RegistrySettings",
    "SubscriptionSettings",
]

_DURATION: Final = re.compile(r"^(INF|[1-9][0-9]*(ms|s|m|h|d|w))$")
_NAME: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def _check_duration(value: str, key: str) -> None:
    if not _DURATION.match(value):
        raise ValueError(f"{key} = {value!r} is not an InfluxQL duration such as 30d, 12h, 90m or INF")


class InfluxSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where points go. ``api = "v1"``: the ``/write`` API of InfluxDB 1.x (and 2.x/3.x compatibility);
    ``api = "v2"``: ``/api/v2/write`` through influxdb-client (token, org, bucket)."""

    api: Literal["v1", "v2"] = "v1"
    url: str = "http://localhost:8086"
    timeout_s: float = 10.0
    gzip: bool = False
    # v1
    database: str = "wardwatch"
    username: str | None = None
    password: Secret | None = None
    # v2 (and the token for v1 compatibility on 2.x/3.x, sent as "Authorization: Token ...")
    token: Secret | None = None
    org: str = ""
    bucket: str = "wardwatch"
    # Schema set up on start (v1): database, retention policies and the downsampling continuous query.
    create_schema: bool = True
    raw_policy: str = "raw"
    raw_retention: str = "30d"
    downsampled_policy: str = "downsampled"
    downsampled_retention: str = "730d"
    downsample_every: str = "1m"
    downsample_resample_for: str = "10m"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        for key in ("database", "raw_policy", "downsampled_policy"):
            if not _NAME.match(getattr(self, key)):
                raise ValueError(f"{key} must be 1-64 letters, digits, '_' or '-', starting with a letter or '_'")
        for key in ("raw_retention", "downsampled_retention", "downsample_every", "downsample_resample_for"):
            _check_duration(getattr(self, key), key)
        if self.api == "v2" and (self.token is None or not self.org):
            raise ValueError("api = 'v2' needs token and org (and bucket)")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


class BatchSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Batching, flow control and retries."""

    # A batch is written when it holds max_points points, or once it is min_delay_ms old if the writer
    # is idle (low latency when lightly loaded), and at the latest max_delay_ms after its first message.
    max_points: int = 5000
    min_delay_ms: int = 20
    max_delay_ms: int = 200
    # MQTT 5 Receive Maximum: unacknowledged messages the broker may send us. Nothing is acknowledged
    # before it is stored, so this bounds memory, and it is the backpressure when the database is down.
    receive_maximum: int = 20_000
    retry_min_s: float = 0.2
    retry_max_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_points < 1 or not 0 <= self.min_delay_ms <= self.max_delay_ms:
            raise ValueError("need max_points >= 1 and 0 <= min_delay_ms <= max_delay_ms")
        if not 1 <= self.receive_maximum <= 65_535:
            raise ValueError("receive_maximum must be 1..65535 (MQTT 5 Receive Maximum)")
        if not 0 < self.retry_min_s <= self.retry_max_s:
            raise ValueError("need 0 < retry_min_s <= retry_max_s")


class SubscriptionSettings(core_config.SubscriptionSettings, kw_only=True):
    """What to subscribe to, and as whom."""

    client_id: str = "wardwatch-ingest"
    filters: list[str] = msgspec.field(
        default_factory=lambda: [
            topics.vitals_filter(),
            topics.ward_filter(topics.DEVICE),
            topics.ward_filter(topics.SCORE),  # NEWS2 as alerting scores it (measurement news2)
        ]
    )
    # Several instances with the same share_group split the stream ("$share/GROUP/filter").
    share_group: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.share_group is not None and not _NAME.match(self.share_group):
            raise ValueError("share_group must be 1-64 letters, digits, '_' or '-'")

    def topic_filters(self) -> list[str]:
        """The filters as subscribed (with the ``$share/`` prefix when sharing)."""
        if self.share_group is None:
            return list(self.filters)
        return [f"$share/{self.share_group}/{f}" for f in self.filters]


class MetricsSettings(core_config.MetricsSettings, kw_only=True):
    """The Prometheus endpoint (``GET /metrics``); ``port = 0`` turns it off."""

    port: int = 9464


class RegistrySettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Provenance (``docs/provenance.md``): store a sample only if the registry bound its source at its time."""

    # Off only for a site without a registry (every sample is then stored as it comes, as before issue 12).
    enforce: bool = True
    # At start-up the registry's retained documents may arrive after the session's queued messages: a ward's
    # messages are held (not acknowledged) until its documents are in step, for at most this long, then judged.
    settle_s: Annotated[float, msgspec.Meta(ge=0)] = 10.0
    # Where the last registry documents are kept, so that a restart judges its session's backlog at once
    # (the retained documents queue behind that backlog at the broker; with more than batch.receive_maximum
    # messages waiting they cannot arrive until some are acknowledged). Strongly advised; None: not kept.
    state_file: Path | None = None


class IngestConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Everything ``wardwatch ingest`` reads from its config file."""

    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    influx: InfluxSettings = msgspec.field(default_factory=InfluxSettings)
    batch: BatchSettings = msgspec.field(default_factory=BatchSettings)
    subscription: SubscriptionSettings = msgspec.field(default_factory=SubscriptionSettings)
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)
    registry: RegistrySettings = msgspec.field(default_factory=RegistrySettings)
    log_level: str = "INFO"
    # samples stamped further ahead of this server's clock (or before 2020) are dead-lettered ("clock")
    future_margin_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
