"""Shared configuration loading: TOML + environment overrides, errors naming key and fix, secrets hidden."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from wardwatch.core.config import MqttSettings, Secret, env_overrides, load_config
from wardwatch.core.errors import ConfigError


class _Service(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    ward: str
    mqtt: MqttSettings = msgspec.field(default_factory=MqttSettings)
    batch_size: int = 100


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "service.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_file_values_and_defaults(tmp_path: Path) -> None:
    path = _write(tmp_path, 'ward = "ward-a"\n[mqtt]\nhost = "broker"\nport = 1883\ntls = false\n')
    config = load_config(_Service, path, environ={})
    assert config.ward == "ward-a"
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker", 1883, False)
    assert config.batch_size == 100


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, 'ward = "ward-a"\n[mqtt]\nport = 1883\n')
    environ = {"WARDWATCH_MQTT__PORT": "8884", "WARDWATCH_MQTT__PASSWORD": "s3cret!", "WARDWATCH_BATCH_SIZE": "7"}
    config = load_config(_Service, path, environ=environ)
    assert config.mqtt.port == 8884
    assert config.batch_size == 7
    assert isinstance(config.mqtt.password, Secret)
    assert config.mqtt.password.reveal() == "s3cret!"


def test_secrets_never_print(tmp_path: Path) -> None:
    path = _write(tmp_path, 'ward = "ward-a"\n[mqtt]\npassword = "hunter2"\n')
    config = load_config(_Service, path, environ={})
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.mqtt.password)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('ward = "a"\n[mqtt]\nport = "many"\n', "mqtt.port", "Expected `int`"),
        ('ward = "a"\n[mqtt]\nprot = 1\n', "mqtt", "unknown key `prot`"),
        ("[mqtt]\nport = 1\n", None, "required key missing: `ward`"),
        ('ward = "a"\n[mqtt]\nport = 70000\n', "mqtt", "not a TCP port"),
        ('ward = "a"\n[mqtt]\ncert_file = "/c"\n', "mqtt", "go together"),
    ],
)
def test_errors_name_key_and_fix(tmp_path: Path, text: str, key: str | None, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_Service, _write(tmp_path, text), environ={})
    assert info.value.key == key
    assert words in str(info.value)
    assert str(tmp_path) in str(info.value)


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_Service, tmp_path / "nope.toml", environ={})
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_Service, _write(tmp_path, "ward = \n"), environ={})


def test_env_overrides_parse_toml_values() -> None:
    assert env_overrides(
        {"WARDWATCH_A__B": "true", "WARDWATCH_C": "[1, 2]", "WARDWATCH_D": "plain text", "X": "1"}
    ) == {
        "a": {"b": True},
        "c": [1, 2],
        "d": "plain text",
    }
