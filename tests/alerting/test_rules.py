"""Rule configuration: layering, per-patient overrides, validation errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardwatch.alerting.rules import DEFAULTS, RuleSet, Thresholds, load_rules, parse_rules
from wardwatch.core.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "alerting" / "rules.example.toml"


def test_evidence_based_defaults() -> None:
    th = Thresholds()
    assert (th.spo2_low, th.spo2_delay_s, th.spo2_severe_margin, th.satseconds_budget) == (90, 15, 10, 100)
    assert (th.hr_high, th.hr_high_delay_s, th.hr_low, th.hr_low_delay_s, th.hr_low_severe) == (130, 30, 40, 15, 35)
    assert (th.spo2_reset_margin, th.spo2_reset_s) == (2, 10)
    assert (th.sensor_off_s, th.poor_signal_s, th.device_silent_s) == (30, 60, 60)
    assert (th.battery_low, th.battery_critical) == (15, 5)
    assert RuleSet().resolve("ward-a", "p-1") == DEFAULTS


def test_layers_defaults_ward_patient() -> None:
    rules = parse_rules(
        """
        [defaults]
        spo2_delay_s = 20
        [wards.ward-a]
        spo2_low = 88
        [patients.p-1]
        spo2_low = 85
        news2_scale = 2
        supplemental_o2 = true
        """
    )
    assert rules.resolve("ward-a", "p-2").spo2_low == 88
    assert rules.resolve("ward-b", "p-2").spo2_low == 90
    p1 = rules.resolve("ward-a", "p-1")
    assert (p1.spo2_low, p1.news2_scale, p1.supplemental_o2, p1.spo2_delay_s) == (85, 2, True, 20)


def test_example_file_loads() -> None:
    rules = load_rules(EXAMPLE)
    assert rules.resolve("ward-a", "p-example").news2_scale == 2
    assert rules.resolve("ward-a", "p-other").spo2_low == 90


def test_with_patient_override_is_immutable_and_removable() -> None:
    rules = RuleSet()
    changed = rules.with_patient_override("p-1", spo2_low=88)
    assert rules.resolve("w", "p-1").spo2_low == 90
    assert changed.resolve("w", "p-1").spo2_low == 88
    assert changed.patient_overrides("p-1") == {"spo2_low": 88}
    assert changed.with_patient_override("p-1", spo2_low=None).patient_overrides("p-1") == {}
    replaced = changed.replacing_patient_overrides("p-1", {"hr_high": 120})
    assert replaced.patient_overrides("p-1") == {"hr_high": 120}
    assert replaced.to_dict()["patients"] == {"p-1": {"hr_high": 120}}
    assert RuleSet().with_ward("ward-a", spo2_low=88).resolve("ward-a", "p-9").spo2_low == 88


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"spo2_low": 120}, "patients.p-1.spo2_low"),
        ({"spo2_lo": 88}, "patients.p-1.spo2_lo"),
        ({"news2_scale": 3}, "patients.p-1.news2_scale"),
        ({"hr_low": 140}, "patients.p-1.hr_low"),
        ({"spo2_delay_s": "soon"}, "patients.p-1.spo2_delay_s"),
        ({"spo2_delay_s": -1}, "patients.p-1.spo2_delay_s"),
        ({"battery_critical": 30}, "patients.p-1.battery_critical"),
    ],
)
def test_invalid_override_names_the_key(changes: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        RuleSet().with_patient_override("p-1", **changes)
    assert info.value.key == key


def test_invalid_file_names_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text("[wards.ward-a]\nhr_high = 20\n")
    with pytest.raises(ConfigError) as info:
        load_rules(path)
    assert info.value.key == "wards.ward-a.hr_high"
    assert str(path) in str(info.value)
    path.write_text("[ward.ward-a]\n")
    with pytest.raises(ConfigError, match="ward"):
        load_rules(path)
    with pytest.raises(ConfigError, match="identifier"):
        RuleSet(patients={"Mr Smith": {}})
    with pytest.raises(ConfigError, match="TOML"):
        parse_rules("[defaults")
