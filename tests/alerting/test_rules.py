"""Rule configuration: layering, per-patient overrides, validation errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from wardwatch.alerting.rules import (
    DEFAULTS,
    PROFILES,
    RANGES,
    RuleSet,
    Thresholds,
    load_rules,
    parse_rules,
    validate_overrides,
)
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


# --- bounds (issue #11, finding 2) and profiles ---------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sensor_off_s", 1e306),
        ("spo2_delay_s", 1e12),
        ("hr_high_delay_s", 1e12),
        ("hr_high", float("nan")),
        ("spo2_low", float("inf")),
        ("hr_low", float("-inf")),
        ("asystole_s", 0.5),
        ("hr_high_beats", 10_000),
        ("device_silent_s", 0),
    ],
)
def test_every_field_is_finite_and_within_its_documented_range(field: str, value: float) -> None:
    with pytest.raises(ConfigError) as info:
        validate_overrides(RuleSet(), "p-1", {field: value})
    assert info.value.key == f"patients.p-1.{field}"
    low, high = RANGES[field]
    assert f"{low:g}..{high:g}" in info.value.problem


def test_every_numeric_setting_has_a_range_that_holds_both_profiles() -> None:
    numeric = {
        name
        for name in Thresholds.__struct_fields__
        if isinstance(getattr(DEFAULTS, name), int | float) and not isinstance(getattr(DEFAULTS, name), bool)
    }
    assert numeric - {"news2_scale"} == set(RANGES)  # news2_scale is the literal 1 or 2
    for profile in PROFILES:
        th = RuleSet({"profile": profile}).resolve("ward-a", "p-1")
        assert all(RANGES[k][0] <= getattr(th, k) <= RANGES[k][1] for k in RANGES)


def test_a_toml_nan_or_inf_is_refused() -> None:
    with pytest.raises(ConfigError, match="finite") as info:
        parse_rules("[defaults]\nhr_high = nan\n")
    assert info.value.key == "defaults.hr_high"
    with pytest.raises(ConfigError, match="finite"):
        parse_rules("[wards.ward-a]\nflap_window_s = inf\n")


def test_validate_overrides_returns_the_new_rule_set_and_changes_nothing_else() -> None:
    rules = RuleSet()
    changed = validate_overrides(rules, "p-1", {"spo2_low": 88, "asystole_s": 6})
    assert changed.resolve("ward-a", "p-1").asystole_s == 6
    assert rules.patient_overrides("p-1") == {}
    assert validate_overrides(changed, "p-1", {}).patient_overrides("p-1") == {}


def test_arrhythmia_profile_is_the_cinc_2015_definition() -> None:
    th = RuleSet({"profile": "arrhythmia"}).resolve("ward-a", "p-1")
    assert (th.hr_low_severe, th.hr_low_severe_beats) == (40, 5)
    assert (th.hr_high, th.hr_high_beats) == (140, 17)
    assert th.asystole_s == 4
    virtual = RuleSet().resolve("ward-a", "p-1")
    assert virtual == DEFAULTS
    assert virtual.profile == "virtual-ward"


def test_profiles_are_selected_per_ward_and_per_patient() -> None:
    rules = parse_rules(
        """
        [defaults]
        sensor_off_s = 45
        [wards.ccu]
        profile = "arrhythmia"
        [patients.p-af]
        profile = "arrhythmia"
        hr_high = 150
        [patients.p-home]
        profile = "virtual-ward"
        """
    )
    assert rules.resolve("ccu", "p-1").hr_high_beats == 17
    assert rules.resolve("ccu", "p-1").sensor_off_s == 45  # keys of any layer still apply on top
    assert rules.resolve("ccu", "p-home").hr_high_beats == 0  # the most specific layer's profile wins
    af = rules.resolve("ward-a", "p-af")
    assert (af.profile, af.hr_high, af.hr_high_beats) == ("arrhythmia", 150, 17)
    assert rules.resolve("ward-a", "p-1").profile == "virtual-ward"
    with pytest.raises(ConfigError, match="unknown rule profile") as info:
        RuleSet(wards={"ccu": {"profile": "icu"}})
    assert info.value.key == "wards.ccu.profile"


def test_meaningful_combinations_pass_and_contradictions_are_refused() -> None:
    # severe and mild at the same limit, the severe one defined in beats: meaningful
    RuleSet({"hr_low": 40, "hr_low_severe": 40, "hr_low_severe_beats": 5})
    RuleSet({"hr_low_beats": 8, "hr_low_severe_beats": 5, "hr_low_severe": 38})
    for changes, key in (
        ({"hr_low_severe": 45}, "patients.p-1.hr_low_severe"),  # "severe" at a milder rate
        ({"hr_low_severe": 40, "hr_low_severe_delay_s": 15}, "patients.p-1.hr_low_severe"),  # same rule twice
        ({"hr_low": 90, "hr_high": 90}, "patients.p-1.hr_low"),
    ):
        with pytest.raises(ConfigError) as info:
            validate_overrides(RuleSet(), "p-1", changes)
        assert info.value.key == key
