"""The one TOML writer: what it writes reads back equal, secrets revealed, nothing null, files private."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from wardwatch.core.config import Secret
from wardwatch.core.tomlfile import toml_text, toml_value, write_toml


def test_written_config_reads_back_with_paths_as_strings_secrets_revealed_and_none_left_out(tmp_path: Path) -> None:
    data = {
        "log_level": "INFO",
        "mqtt": {"host": "127.0.0.1", "port": 8883, "tls": True, "password": Secret("s3cret"), "ca_file": None},
        "queue": {"path": tmp_path / "q.sqlite3"},
        "wards": {"w": {"destinations": {"n": {"channels": [{"type": "webhook", "url": "http://x/"}]}}}},
        "devices": [],
    }
    path = write_toml(tmp_path / "config" / "service.toml", data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text()) == {
        "log_level": "INFO",
        "mqtt": {"host": "127.0.0.1", "port": 8883, "tls": True, "password": "s3cret"},
        "queue": {"path": str(tmp_path / "q.sqlite3")},
        "wards": {"w": {"destinations": {"n": {"channels": [{"type": "webhook", "url": "http://x/"}]}}}},
        "devices": [],
    }
    assert toml_text({"a": 'quote " and \\ back'}) == 'a = "quote \\" and \\\\ back"\n'


def test_a_single_value_is_escaped_for_templates() -> None:
    quoted = 'dir with "quotes"'
    assert tomllib.loads("x = " + toml_value(quoted)) == {"x": quoted}
    assert toml_value(Path("/var/lib/influxdb")) == '"/var/lib/influxdb"'
