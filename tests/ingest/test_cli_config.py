"""The command line and the configuration, including the shipped example config."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardwatch.core.config import load_config
from wardwatch.core.errors import ConfigError
from wardwatch.ingest.cli import main
from wardwatch.ingest.config import IngestConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "ingest" / "ingest.example.toml"


def test_example_config_is_valid() -> None:
    config = load_config(IngestConfig, EXAMPLE, environ={})
    assert config.influx.api == "v1"
    assert config.batch.max_delay_ms == 200
    assert config.subscription.topic_filters() == ["wardwatch/v1/vitals/+/+/+/#", "wardwatch/v1/device/+/#"]


def test_share_group_prefixes_filters() -> None:
    config = load_config(IngestConfig, EXAMPLE, environ={"WARDWATCH_SUBSCRIPTION__SHARE_GROUP": "ingest"})
    assert config.subscription.topic_filters()[0] == "$share/ingest/wardwatch/v1/vitals/+/+/+/#"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"WARDWATCH_INFLUX__RAW_RETENTION": "30 days"}, "influx"),
        ({"WARDWATCH_INFLUX__API": "v3"}, "influx.api"),
        ({"WARDWATCH_INFLUX__API": "v2"}, "influx"),  # v2 needs token and org
        ({"WARDWATCH_BATCH__RECEIVE_MAXIMUM": "70000"}, "batch"),
        ({"WARDWATCH_BATCH__MIN_DELAY_MS": "500"}, "batch"),
        ({"WARDWATCH_INFLUX__DATABASE": "bad name"}, "influx"),
    ],
)
def test_bad_settings_name_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(IngestConfig, EXAMPLE, environ=env)
    assert caught.value.key is not None
    assert caught.value.key.startswith(key)


def test_cli_reports_a_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_requires_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main([])
    assert "--config" in capsys.readouterr().err
