"""Settings of ``wardwatch console`` (TOML file + ``WARDWATCH_*`` environment overrides)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import msgspec

from wardwatch.core.config import Secret
from wardwatch.core.ids import ID_PATTERN

__all__ = ["AlertingSettings", "ConsoleConfig", "InfluxSettings"]

_ID_RE: Final = re.compile(ID_PATTERN)
_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class AlertingSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The alerting API the console logs in to on the user's behalf."""

    url: str = "http://127.0.0.1:8080"
    ca_file: Path | None = None  # the CA of the API's certificate when it is served over TLS
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        self.url = self.url.rstrip("/")
        if self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")


class InfluxSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """InfluxDB 1.x, read with a read-only user (``reader`` in ``wardwatch up``); names as ``wardwatch ingest``."""

    url: str = "http://127.0.0.1:8086"
    database: str = "wardwatch"
    username: str | None = None
    password: Secret | None = None
    raw_policy: str = "raw"
    downsampled_policy: str = "downsampled"
    downsampled_measurement: str = "vitals_1m"
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url {self.url!r} must start with http:// or https://")
        self.url = self.url.rstrip("/")
        for name in ("database", "raw_policy", "downsampled_policy", "downsampled_measurement"):
            if not _NAME_RE.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be a plain name (letters, digits, '_')")


class ConsoleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``wardwatch console --config FILE``."""

    ward: str
    host: str = "127.0.0.1"
    port: int = 8090
    tls_cert: Path | None = None  # serve HTTPS (anywhere but loopback)
    tls_key: Path | None = None
    idle_logout_s: float = 600.0  # no keyboard, pointer or touch input for this long: logged out
    session_max_s: float = 12 * 3600.0
    stale_after_s: float = 60.0  # a reading older than this is marked stale on the board
    log_level: str = "INFO"
    alerting: AlertingSettings = msgspec.field(default_factory=AlertingSettings)
    influx: InfluxSettings = msgspec.field(default_factory=InfluxSettings)

    def __post_init__(self) -> None:
        if not _ID_RE.match(self.ward):
            raise ValueError(f"ward {self.ward!r} must be a wardwatch identifier")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not 5 <= self.idle_logout_s <= self.session_max_s:
            raise ValueError("need 5 <= idle_logout_s <= session_max_s")
        if self.stale_after_s <= 0:
            raise ValueError("stale_after_s must be positive")
