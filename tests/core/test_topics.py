"""Topic scheme: construction, parsing, ACL confinement entries and identifier rules."""

from __future__ import annotations

import msgspec
import pytest

from wardwatch.core import topics
from wardwatch.core.errors import TopicError
from wardwatch.core.ids import Identifier, check_id, pseudonym


def test_vitals_topic_round_trips_through_parse() -> None:
    topic = topics.vitals_topic("ward-a", "gw-01", "p-7f3a", "d-ox-1", "spo2")
    assert topic == "wardwatch/v1/vitals/ward-a/gw-01/p-7f3a/d-ox-1/spo2"
    parts = topics.parse_topic(topic)
    assert (parts.kind, parts.ward, parts.gateway, parts.patient, parts.device, parts.signal) == (
        "vitals",
        "ward-a",
        "gw-01",
        "p-7f3a",
        "d-ox-1",
        "spo2",
    )


def test_gateway_topics_parse() -> None:
    assert topics.parse_topic(topics.availability_topic("ward-a", "gw-01")).leaf == "availability"
    assert topics.parse_topic(topics.gap_topic("ward-a", "gw-01")).leaf == "gap"
    with pytest.raises(TopicError, match="gateway topics end in"):
        topics.parse_topic("wardwatch/v1/gateway/ward-a/gw-01/other")


@pytest.mark.parametrize(
    "topic",
    [
        "other/v1/vitals/a/b/c/d/e",
        "wardwatch/v1/weather/a",
        "wardwatch/v1/vitals/ward-a/gw-01/p-1/d-1",
        "wardwatch/v1/vitals/ward-a/gw-01/John Smith/d-1/spo2",
        "wardwatch/v1/alarm/ward-a/+",
    ],
)
def test_bad_topics_are_rejected(topic: str) -> None:
    with pytest.raises(TopicError):
        topics.parse_topic(topic)


def test_subscription_filters() -> None:
    assert topics.vitals_filter() == "wardwatch/v1/vitals/+/+/+/#"
    assert topics.vitals_filter(patient="p-1") == "wardwatch/v1/vitals/+/+/p-1/#"
    assert topics.ward_filter("alarm", "ward-a") == "wardwatch/v1/alarm/ward-a/#"


def test_gateway_acl_confines_gateway_to_its_own_topics() -> None:
    acl = topics.gateway_acl("gw-01", "ward-a")
    assert acl.splitlines() == [
        "user gw-01",
        "topic write wardwatch/v1/vitals/ward-a/gw-01/#",
        "topic write wardwatch/v1/device/ward-a/gw-01/#",
        "topic write wardwatch/v1/gateway/ward-a/gw-01/#",
        "topic read wardwatch/v1/registry/ward-a/gw-01",
    ]
    with pytest.raises(TopicError):
        topics.gateway_acl("gw-01/#", "ward-a")


def test_identifiers_reject_names_and_wildcards() -> None:
    for bad in ["", "John", "a b", "a/b", "+", "#", "-x", "x" * 65]:
        with pytest.raises(TopicError):
            check_id(bad)
    assert check_id("p-123") == "p-123"


def test_pseudonym_is_stable_keyed_and_valid() -> None:
    key = b"k" * 32
    first = pseudonym(key, "MRN 0012345")
    assert first == pseudonym(key, "MRN 0012345")
    assert first != pseudonym(b"j" * 32, "MRN 0012345")
    assert first.startswith("p-")
    assert "0012345" not in first
    check_id(first)
    with pytest.raises(ValueError, match="16 bytes"):
        pseudonym(b"short", "x")


@pytest.mark.parametrize("bad", ["p-1\n", "p-1\r\n", "p-1 ", "\np-1"])
def test_identifiers_with_a_trailing_newline_or_space_are_refused(bad: str) -> None:
    """Python's ``$`` matches before a final newline: ``"p-1\\n"`` was accepted by the schema and check_id."""
    with pytest.raises(TopicError):
        check_id(bad)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert(bad, Identifier)
