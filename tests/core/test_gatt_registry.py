"""UUID registry, decode/encode by UUID, and the JSON form."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import (
    CHARACTERISTICS,
    AbsentReason,
    BatteryLevel,
    BodySensorLocation,
    DeviceSensorStatus,
    GattValue,
    HeartRateMeasurement,
    MeasurementStatus,
    MedFloat,
    PlxContinuousMeasurement,
    PlxFeatureFlags,
    PlxFeatures,
    PlxSpotCheckMeasurement,
    RacpNumberOfRecords,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    UnknownCharacteristicError,
    characteristic_name,
    decode,
    encode,
    lookup,
    parse_uuid16,
    sig_uuid,
    to_jsonable,
)


@pytest.mark.parametrize(
    "uuid",
    [
        "2a37",
        "2A37",
        "0x2A37",
        "0x2a37",
        " 2a37 ",
        "00002a37",
        "00002a37-0000-1000-8000-00805f9b34fb",
        "00002A37-0000-1000-8000-00805F9B34FB",
        0x2A37,
    ],
)
def test_uuid_forms(uuid: str | int) -> None:
    assert parse_uuid16(uuid) == 0x2A37
    assert characteristic_name(uuid) == "Heart Rate Measurement"


@pytest.mark.parametrize(
    "uuid",
    ["", "2a3", "2a377", "zzzz", "0x", "12342a37", "00002a37-0000-1000-8000-00805f9b34fc", "2a37-", -1, 0x10000],
)
def test_malformed_uuid(uuid: str | int) -> None:
    with pytest.raises(UnknownCharacteristicError):
        parse_uuid16(uuid)


def test_unknown_uuid_is_a_decode_error() -> None:
    with pytest.raises(GattDecodeError, match="no codec for characteristic 0x2A99"):
        decode("2a99", b"\x00")
    with pytest.raises(UnknownCharacteristicError):
        lookup("180d")  # a service, not a characteristic


def test_registry_contents() -> None:
    assert {f"{u:04x}" for u in CHARACTERISTICS} == {
        "2a37",
        "2a38",
        "2a5e",
        "2a5f",
        "2a60",
        "2a52",
        "2a19",
        "2a29",
        "2a24",
        "2a25",
        "2a27",
        "2a26",
        "2a28",
    }
    assert characteristic_name("2a5f") == "PLX Continuous Measurement"
    assert characteristic_name("2a28") == "Software Revision String"
    assert lookup("2a19").uuid == sig_uuid(0x2A19) == "00002a19-0000-1000-8000-00805f9b34fb"
    assert lookup("2a19").label == "Battery Level (0x2A19)"


def test_decode_and_encode_by_uuid() -> None:
    hr = decode("2a37", bytes.fromhex("1e46640033036603"))
    assert isinstance(hr, HeartRateMeasurement)
    assert hr.heart_rate == 70
    assert encode("0x2A37", hr) == bytes.fromhex("1e46640033036603")
    assert decode("2a29", b"Acme\x00") == "Acme"
    assert encode("2a19", 80) == b"\x50"


def test_device_information_error_names_the_characteristic() -> None:
    with pytest.raises(GattDecodeError, match=r"Serial Number String \(0x2A25\): invalid UTF-8"):
        decode("2a25", b"\xff")


def test_encode_by_uuid_with_wrong_value_type() -> None:
    with pytest.raises(GattEncodeError, match="expected PlxContinuousMeasurement"):
        encode("2a5f", HeartRateMeasurement(70))


def test_jsonable_heart_rate() -> None:
    out = to_jsonable(decode("2a37", bytes.fromhex("1e46640033036603")))
    assert out == {
        "heart_rate": 70,
        "sensor_contact": True,
        "energy_expended": 100,
        "rr_intervals": [0.7998046875, 0.849609375],
    }
    assert to_jsonable(HeartRateMeasurement(60))["sensor_contact"] is None


def test_jsonable_continuous_with_absent_values_and_flags() -> None:
    m = PlxContinuousMeasurement(
        spo2=MedFloat.absent(AbsentReason.nan),
        pulse_rate=MedFloat(72),
        spo2_fast=MedFloat(970, -1),
        pulse_rate_fast=MedFloat.absent(AbsentReason.positive_infinity),
        measurement_status=MeasurementStatus.questionable_measurement_detected | MeasurementStatus.validated_data,
        device_sensor_status=DeviceSensorStatus.sensor_unconnected_to_user,
        pulse_amplitude_index=MedFloat(52, -1),
    )
    out = to_jsonable(m)
    assert out == {
        "spo2": None,
        "spo2_absent_reason": "nan",
        "pulse_rate": 72.0,
        "spo2_fast": 97.0,
        "pulse_rate_fast": None,
        "pulse_rate_fast_absent_reason": "positive_infinity",
        "spo2_slow": None,
        "pulse_rate_slow": None,
        "measurement_status": ["validated_data", "questionable_measurement_detected"],
        "device_sensor_status": ["sensor_unconnected_to_user"],
        "pulse_amplitude_index": 5.2,
    }
    json.dumps(out, allow_nan=False)


def test_jsonable_spot_check() -> None:
    m = PlxSpotCheckMeasurement(
        MedFloat(98),
        MedFloat(75),
        timestamp=datetime(2024, 5, 15, 12, 30),
        device_clock_not_set=True,
    )
    assert to_jsonable(m) == {
        "spo2": 98.0,
        "pulse_rate": 75.0,
        "timestamp": "2024-05-15T12:30:00",
        "measurement_status": None,
        "device_sensor_status": None,
        "pulse_amplitude_index": None,
        "device_clock_not_set": True,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (BodySensorLocation.ear_lobe, {"body_sensor_location": "ear_lobe"}),
        (BatteryLevel(87), {"battery_level": 87}),
        ("WW-HR1", {"value": "WW-HR1"}),
        (
            PlxFeatures(PlxFeatureFlags(0x11), MeasurementStatus.measurement_ongoing),
            {
                "supported_features": ["measurement_status_support", "spo2pr_fast"],
                "measurement_status_support": ["measurement_ongoing"],
                "device_sensor_status_support": None,
            },
        ),
        (
            RacpRequest.report_all_records(),
            {"opcode": "report_stored_records", "operator": "all_records", "operand": ""},
        ),
        (RacpNumberOfRecords(4), {"opcode": "number_of_stored_records_response", "number_of_records": 4}),
        (
            RacpResponse(1, RacpResponseCode.success),
            {
                "opcode": "response_code",
                "request_opcode": 1,
                "request_opcode_name": "report_stored_records",
                "response_code": "success",
            },
        ),
        (
            RacpResponse(9, RacpResponseCode.op_code_not_supported),
            {
                "opcode": "response_code",
                "request_opcode": 9,
                "request_opcode_name": None,
                "response_code": "op_code_not_supported",
            },
        ),
    ],
)
def test_jsonable_others(value: GattValue, expected: dict[str, object]) -> None:
    assert to_jsonable(value) == expected


def test_jsonable_rejects_unknown_types() -> None:
    with pytest.raises(GattEncodeError, match="no JSON form for int"):
        to_jsonable(5)
