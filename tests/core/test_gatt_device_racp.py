"""Battery Level, Device Information strings and Record Access Control Point."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardwatch.core.errors import GattDecodeError, GattEncodeError
from wardwatch.core.gatt import (
    BatteryLevel,
    RacpMessage,
    RacpNumberOfRecords,
    RacpOpcode,
    RacpOperator,
    RacpRequest,
    RacpResponse,
    RacpResponseCode,
    decode_battery_level,
    decode_device_information_string,
    decode_racp,
    encode_battery_level,
    encode_device_information_string,
    encode_racp,
)

# --- Battery Level -------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "percent"), [(0, 0), (57, 57), (100, 100)])
def test_battery_recorded(raw: int, percent: int) -> None:
    assert decode_battery_level(bytes((raw,))) == BatteryLevel(percent)
    assert encode_battery_level(BatteryLevel(percent)) == bytes((raw,))
    assert encode_battery_level(percent) == bytes((raw,))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x65", "Battery Level (0x2A19): level 101 % above 100"),
        (b"\xff", "level 255 % above 100"),
        (b"", "needs exactly 1 byte, got 0"),
        (b"\x10\x00", "needs exactly 1 byte, got 2"),
    ],
)
def test_battery_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(GattDecodeError) as info:
        decode_battery_level(data)
    assert problem in str(info.value)


def test_battery_encode_errors() -> None:
    with pytest.raises(GattEncodeError, match=r"battery level \(%\) 101 is not an integer in 0\.\.100"):
        encode_battery_level(101)
    with pytest.raises(GattEncodeError, match="battery level"):
        encode_battery_level(BatteryLevel(-1))


@given(st.integers(0, 100))
def test_battery_round_trip(percent: int) -> None:
    assert decode_battery_level(encode_battery_level(BatteryLevel(percent))) == BatteryLevel(percent)


# --- Device Information strings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"Acme Medical", "Acme Medical"),
        (b"WW-HR1\x00\x00\x00", "WW-HR1"),
        (b"", ""),
        (b"\x00", ""),
        ("Zürich µ-2".encode(), "Zürich µ-2"),
        (b"a\x00b", "a\x00b"),  # only trailing NULs are stripped
    ],
)
def test_device_information_recorded(data: bytes, text: str) -> None:
    assert decode_device_information_string(data) == text


@pytest.mark.parametrize("data", [b"\xff", b"abc\xc3", b"\xed\xa0\x80"])
def test_device_information_invalid_utf8(data: bytes) -> None:
    with pytest.raises(GattDecodeError, match="invalid UTF-8 at byte"):
        decode_device_information_string(data, "Model Number String (0x2A24)")


def test_device_information_encode_errors() -> None:
    with pytest.raises(GattEncodeError, match="ends with NUL"):
        encode_device_information_string("abc\x00")
    with pytest.raises(GattEncodeError, match="not encodable as UTF-8"):
        encode_device_information_string("\ud800")
    with pytest.raises(GattEncodeError, match="expected str, got bytes"):
        encode_device_information_string(b"abc")  # type: ignore[arg-type]


@given(st.text().filter(lambda t: not t.endswith("\x00")))
def test_device_information_round_trip(text: str) -> None:
    assert decode_device_information_string(encode_device_information_string(text)) == text


# --- RACP ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hex_", "message"),
    [
        ("0101", RacpRequest.report_all_records()),
        ("0401", RacpRequest.report_number_of_all_records()),
        ("0201", RacpRequest.delete_all_records()),
        ("0300", RacpRequest.abort()),
        ("0105", RacpRequest(RacpOpcode.report_stored_records, RacpOperator.first_record)),
        (
            "01030100e807",
            RacpRequest(RacpOpcode.report_stored_records, RacpOperator.greater_than_or_equal_to, b"\x01\x00\xe8\x07"),
        ),
        ("05000300", RacpNumberOfRecords(3)),
        ("0500ffff", RacpNumberOfRecords(65535)),
        ("06000101", RacpResponse(1, RacpResponseCode.success)),
        ("06000406", RacpResponse(4, RacpResponseCode.no_records_found)),
        ("06000702", RacpResponse(7, RacpResponseCode.op_code_not_supported)),  # answer to unknown op code
    ],
)
def test_racp_recorded(hex_: str, message: RacpMessage) -> None:
    assert decode_racp(bytes.fromhex(hex_)) == message
    assert encode_racp(message) == bytes.fromhex(hex_)


@pytest.mark.parametrize(
    ("hex_", "problem"),
    [
        ("", "truncated: needs op code and operator"),
        ("01", "truncated: needs op code and operator"),
        ("0701", "unsupported op code 7"),
        ("0001", "unsupported op code 0"),
        ("0107", "unknown operator 7"),
        ("0100", "report_stored_records needs a non-null operator"),
        ("0301", "abort operation takes the null operator and no operand"),
        ("030000", "abort operation takes the null operator and no operand"),
        ("010100", "operator all_records takes no operand, got 1 byte(s)"),
        ("0102", "operator less_than_or_equal_to needs an operand"),
        ("050003", "number of stored records response must be 05 00 <u16 count>"),
        ("05010300", "number of stored records response must be 05 00 <u16 count>"),
        ("0600010a", "unknown response code value 10"),
        ("06000100", "unknown response code value 0"),
        ("060001", "response code must be 06 00"),
    ],
)
def test_racp_malformed(hex_: str, problem: str) -> None:
    with pytest.raises(GattDecodeError, match=r"Record Access Control Point \(0x2A52\)") as info:
        decode_racp(bytes.fromhex(hex_))
    assert problem in str(info.value)


def test_racp_encode_errors() -> None:
    with pytest.raises(GattEncodeError, match="is not a request"):
        encode_racp(RacpRequest(RacpOpcode.response_code, RacpOperator.null))
    with pytest.raises(GattEncodeError, match="takes the null operator"):
        encode_racp(RacpRequest(RacpOpcode.abort_operation, RacpOperator.all_records))
    with pytest.raises(GattEncodeError, match="number of records 65536"):
        encode_racp(RacpNumberOfRecords(65536))
    with pytest.raises(GattEncodeError, match="request op code 256"):
        encode_racp(RacpResponse(256, RacpResponseCode.success))
    with pytest.raises(GattEncodeError, match="expected RacpResponse, got str"):
        encode_racp("0101")  # type: ignore[arg-type]


_operators_without_operand = st.sampled_from(
    [RacpOperator.all_records, RacpOperator.first_record, RacpOperator.last_record]
)
_filter_operators = st.sampled_from(
    [RacpOperator.less_than_or_equal_to, RacpOperator.greater_than_or_equal_to, RacpOperator.within_range_of]
)
_record_opcodes = st.sampled_from(
    [
        RacpOpcode.report_stored_records,
        RacpOpcode.delete_stored_records,
        RacpOpcode.report_number_of_stored_records,
    ]
)
racp_messages = st.one_of(
    st.builds(RacpRequest, _record_opcodes, _operators_without_operand),
    st.builds(RacpRequest, _record_opcodes, _filter_operators, st.binary(min_size=1, max_size=10)),
    st.just(RacpRequest.abort()),
    st.builds(RacpNumberOfRecords, st.integers(0, 0xFFFF)),
    st.builds(RacpResponse, st.integers(0, 0xFF), st.sampled_from(list(RacpResponseCode))),
)


@given(racp_messages)
def test_racp_round_trip(message: RacpMessage) -> None:
    assert decode_racp(encode_racp(message)) == message
