"""Per-patient overrides of the settings that are a choice (the rule profile, the NEWS2 SpO2 scale) pass the
API's body and checks as its OpenAPI document says; anything else is refused naming the setting."""

from __future__ import annotations

import msgspec

from wardwatch.alerting.api import OPENAPI
from wardwatch.alerting.routes.thresholds import ThresholdsBody, check_overrides


def test_a_rule_profile_override_is_accepted_as_the_openapi_document_offers_it() -> None:
    offered = OPENAPI["components"]["schemas"]["ThresholdsBody"]["properties"]["overrides"]["properties"]["profile"]
    body = msgspec.json.decode(
        b'{"overrides": {"profile": "arrhythmia", "news2_scale": 2}, "reason": "known AF"}', type=ThresholdsBody
    )
    assert body.overrides["profile"] in offered["enum"]
    assert check_overrides(body.overrides) is None


def test_choices_outside_the_offered_ones_are_refused_naming_the_setting() -> None:
    assert check_overrides({"profile": "icu"}) == "profile: must be one of virtual-ward, arrhythmia, not 'icu'"
    assert check_overrides({"news2_scale": 3}) == "news2_scale: must be one of 1, 2, not 3"
    assert check_overrides({"news2_scale": True}) == "news2_scale: must be one of 1, 2, not True"
    assert check_overrides({"spo2_low": "88"}) == "spo2_low: must be a number, not '88'"
