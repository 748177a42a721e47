"""Configuration shared by every service: a TOML file plus environment overrides, validated at start-up.

Each service declares its settings as msgspec structs and calls :func:`load_config`. Environment
variables ``WARDWATCH_<SECTION>__<KEY>`` (double underscore between levels) override the file, e.g.
``WARDWATCH_MQTT__PORT=8883``; their values are read as TOML values when they parse as such
(``8883``, ``true``, ``["a", "b"]``) and as plain strings otherwise.

Errors name the key and the fix. Secrets are :class:`Secret` values, which never print.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from wardwatch.core.errors import ConfigError

T = TypeVar("T")

ENV_PREFIX: Final = "WARDWATCH_"


class Secret:
    """A password, token or key that must never appear in logs, reprs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself, for handing to the library that needs it, and nothing else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class MqttSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How a service reaches the MQTT broker. TLS and authentication are on by default in production."""

    host: str = "localhost"
    port: int = 8883
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None  # client certificate (mutual TLS), optional
    key_file: Path | None = None
    username: str | None = None
    password: Secret | None = None
    client_id: str | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 3600

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} is not a TCP port (1-65535)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for mutual TLS, or neither")


class MetricsSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A service's Prometheus endpoint (``GET /metrics``); ``port = 0`` turns it off. Services set their port."""

    host: str = "127.0.0.1"
    port: int = 0


class SubscriptionSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A consumer's persistent MQTT session: its name and its topic filters (services set the defaults)."""

    client_id: str  # the persistent session's name: keep it stable per instance
    filters: list[str]

    def __post_init__(self) -> None:
        if not self.filters:
            raise ValueError("filters must list at least one topic filter")


def _dec_hook(type_: type[Any], obj: Any) -> Any:
    if type_ is Secret and isinstance(obj, str):
        return Secret(obj)
    if type_ is Path and isinstance(obj, str):
        return Path(obj)
    raise NotImplementedError(f"cannot read {type_.__name__} from {type(obj).__name__}")


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def env_overrides(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Nested dict of the overrides in ``environ`` (``WARDWATCH_A__B=1`` -> ``{"a": {"b": 1}}``)."""
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(prefix) or name == prefix + "CONFIG":
            continue
        path = [part.lower() for part in name[len(prefix) :].split("__") if part]
        if not path:
            continue
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name} sets both a value and a sub-key", key=".".join(path))
            node = child
        node[path[-1]] = _parse_env_value(raw)
    return result


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_PATH_RE: Final = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


def _translate(exc: msgspec.ValidationError, source: str) -> ConfigError:
    message = str(exc)
    match = _PATH_RE.search(message)
    key = match.group("path") if match else None
    problem = message[: match.start()] if match else message
    problem = problem.replace("Object contains unknown field", "unknown key")
    if problem.startswith("unknown key"):
        problem += " (check its spelling and section; see the example config in deploy/)"
    elif problem.startswith("Object missing required field"):
        problem = problem.replace("Object missing required field", "required key missing:")
    return ConfigError(problem, key=key or None, source=source)


def load_config(
    model: type[T],
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = ENV_PREFIX,
) -> T:
    """Read ``path`` (TOML; optional), apply environment overrides, and validate into ``model``."""
    environ = os.environ if environ is None else environ
    source = str(path) if path is not None else "environment"
    data: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist; pass the path of a TOML file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"not valid TOML: {exc}", source=source) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file: {exc}", source=source) from None
    return config_from_mapping(model, _merge(data, env_overrides(environ, env_prefix)), source=source)


def config_from_mapping(model: type[T], data: Mapping[str, Any], *, source: str = "mapping") -> T:
    """Validate already parsed settings ``data`` into ``model`` (the one entry point: files, the environment,
    tests and benchmarks); a :class:`ConfigError` names the key and says what is wrong."""
    try:
        return msgspec.convert(dict(data), model, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _translate(exc, source) from None
