"""Alerting's settings are validated through the core's one entry point, with its friendly errors."""

from __future__ import annotations

import pytest

from wardwatch.alerting.settings import config_from_mapping
from wardwatch.core.errors import ConfigError


def test_a_parsed_mapping_gets_the_same_friendly_errors_as_a_file() -> None:
    # alerting used to keep its own copy of the decoding hook and show msgspec's raw text
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"databse": "x.db"})
    assert "unknown key `databse`" in str(info.value)
    assert "see the example config" in str(info.value)
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"database": "x.db", "api": {"port": "many"}})
    assert info.value.key == "api.port"
