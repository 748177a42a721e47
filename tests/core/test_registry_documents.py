"""The registry's wire documents and the provenance check every consumer applies."""

from __future__ import annotations

import pytest

from wardwatch.core.errors import SchemaError
from wardwatch.core.registry import (
    GatewayKit,
    KitDevice,
    ProvenanceIndex,
    Refusal,
    WardManifest,
    decode_document,
    encode_document,
    kit_from_bindings,
    kit_topic,
    manifest_topic,
)
from wardwatch.core.schema import DeviceRole
from wardwatch.core.topics import gateway_acl

STRAP = KitDevice(
    id="d-strap", patient="p-1", role=DeviceRole.HEART_RATE_STRAP, since=1_000, address="AA:BB:CC:DD:EE:01"
)


def _index(*kits: GatewayKit) -> ProvenanceIndex:
    index = ProvenanceIndex.empty()
    index.apply(WardManifest(ward="w", issued_at=1, gateways={kit.gateway: kit.revision for kit in kits}))
    for kit in kits:
        index.apply(kit)
    return index


def test_documents_round_trip_and_bad_payloads_say_why() -> None:
    kit = kit_from_bindings("w", "gw-1", 3, 2_000, [STRAP])
    assert decode_document(encode_document(kit)) == kit
    manifest = WardManifest(ward="w", issued_at=5, gateways={"gw-1": 3})
    assert decode_document(encode_document(manifest)) == manifest
    with pytest.raises(SchemaError, match="invalid registry document"):
        decode_document(b'{"kind": "gateway_kit", "ward": "John Smith"}')


def test_a_sample_is_accepted_only_from_its_bound_source_at_its_time() -> None:
    ended = KitDevice(id="d-old", patient="p-1", role=DeviceRole.PULSE_OXIMETER, since=1_000, until=5_000, name="ox")
    index = _index(kit_from_bindings("w", "gw-1", 1, 1, [STRAP, ended]))
    assert index.check("w", "gw-1", "p-1", "d-strap", 1_000) is None
    assert index.check("w", "gw-1", "p-1", "d-strap", 999) is Refusal.NOT_BOUND_AT_TIME
    assert index.check("w", "gw-1", "p-1", "d-old", 4_999) is None
    assert index.check("w", "gw-1", "p-1", "d-old", 5_000) is Refusal.NOT_BOUND_AT_TIME
    assert index.check("w", "gw-1", "p-2", "d-strap", 2_000) is Refusal.WRONG_PATIENT
    assert index.check("w", "gw-1", "p-1", "d-x", 2_000) is Refusal.UNKNOWN_DEVICE
    assert index.check("w", "gw-2", "p-1", "d-strap", 2_000) is Refusal.UNKNOWN_GATEWAY
    assert index.check("v", "gw-1", "p-1", "d-strap", 2_000) is Refusal.UNKNOWN_WARD
    assert index.patients("w") == {"p-1"}


def test_older_revisions_never_replace_newer_ones_and_in_step_follows_the_manifest() -> None:
    index = ProvenanceIndex.empty()
    assert not index.in_step("w")
    index.apply(WardManifest(ward="w", issued_at=10, gateways={"gw-1": 2}))
    assert not index.in_step("w")
    assert index.apply(kit_from_bindings("w", "gw-1", 1, 1, [STRAP]))
    assert not index.in_step("w")
    assert index.apply(kit_from_bindings("w", "gw-1", 2, 2, []))
    assert index.in_step("w")
    assert not index.apply(kit_from_bindings("w", "gw-1", 1, 3, [STRAP]))
    assert index.check("w", "gw-1", "p-1", "d-strap", 2_000) is Refusal.UNKNOWN_DEVICE
    assert not index.apply(WardManifest(ward="w", issued_at=9, gateways={}))


def test_a_gateway_may_read_its_own_kit_only() -> None:
    acl = gateway_acl("gw-1", "w")
    assert f"topic read {kit_topic('w', 'gw-1')}" in acl.splitlines()
    assert not any(line.endswith((manifest_topic("w"), "registry/#")) for line in acl.splitlines())
