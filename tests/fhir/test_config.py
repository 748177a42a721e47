"""The exporter's config: the example file loads, mistakes are refused with a message that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardwatch.core.config import load_config
from wardwatch.core.errors import ConfigError
from wardwatch.fhir.cli import main
from wardwatch.fhir.config import FhirConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "fhir" / "fhir.example.toml"


def test_example_config_loads() -> None:
    config = load_config(FhirConfig, EXAMPLE)
    assert config.export.representation == "summary"
    assert config.subscription.client_id == "wardwatch-fhir"
    assert config.fhir.url.endswith("/")


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[export]\nrepresentation = "raw"\n', "representation"),
        ("[export]\ninterval_s = 0\n", "interval_s"),
        ('[export.bluetooth_addresses]\n"dev-1" = "nope"\n', "AA:BB:CC:DD:EE:FF"),
        ('[export.identifiers]\npatient = "not a uri"\n', "absolute URI"),
        ('[fhir]\nurl = "fhir.example"\n', "http://"),
        ("[fhir]\nmax_bundle_entries = 2\n", "max_bundle_entries"),
    ],
)
def test_mistakes_are_refused(tmp_path: Path, toml: str, says: str) -> None:
    path = tmp_path / "fhir.toml"
    path.write_text(toml, encoding="utf-8")
    with pytest.raises(ConfigError, match=says):
        load_config(FhirConfig, path)


def test_cli_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fhir.toml"
    path.write_text("[export]\ninterval_s = 0\n", encoding="utf-8")
    assert main(["--config", str(path)]) == 2
    assert "interval_s" in capsys.readouterr().err
