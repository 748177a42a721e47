"""Record Access Control Point (0x2A52), the subset the Pulse Oximeter Service uses.

Layout: op code u8, operator u8, operand. Requests (op codes 1-4) keep their operand as raw bytes
(filter parameters are service-specific); the two responses are decoded: Number of Stored
Records Response (5, operand u16 count) and Response Code (6, operand request op code u8 +
response code u8). Codes checked against Infineon/bless ``cy_ble_plxs.h``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from wardwatch.core.errors import GattEncodeError

from ._common import U16, BytesLike, check_uint, decode_error, require_type

__all__ = [
    "RacpMessage",
    "RacpNumberOfRecords",
    "RacpOpcode",
    "RacpOperator",
    "RacpRequest",
    "RacpResponse",
    "RacpResponseCode",
    "decode_racp",
    "encode_racp",
]

RACP = "Record Access Control Point (0x2A52)"


class RacpOpcode(enum.IntEnum):
    """RACP op codes."""

    report_stored_records = 1
    delete_stored_records = 2
    abort_operation = 3
    report_number_of_stored_records = 4
    number_of_stored_records_response = 5
    response_code = 6


class RacpOperator(enum.IntEnum):
    """RACP operators."""

    null = 0
    all_records = 1
    less_than_or_equal_to = 2
    greater_than_or_equal_to = 3
    within_range_of = 4
    first_record = 5
    last_record = 6


class RacpResponseCode(enum.IntEnum):
    """Response Code values (operand of op code 6)."""

    success = 1
    op_code_not_supported = 2
    invalid_operator = 3
    operator_not_supported = 4
    invalid_operand = 5
    no_records_found = 6
    abort_unsuccessful = 7
    procedure_not_completed = 8
    operand_not_supported = 9


_REQUEST_OPCODES = frozenset(
    {
        RacpOpcode.report_stored_records,
        RacpOpcode.delete_stored_records,
        RacpOpcode.abort_operation,
        RacpOpcode.report_number_of_stored_records,
    }
)
_FILTER_OPERATORS = frozenset(
    {RacpOperator.less_than_or_equal_to, RacpOperator.greater_than_or_equal_to, RacpOperator.within_range_of}
)


@dataclass(frozen=True, slots=True)
class RacpRequest:
    """A client request (op codes 1-4); ``operand`` holds raw filter parameters, if any."""

    opcode: RacpOpcode
    operator: RacpOperator
    operand: bytes = b""

    @classmethod
    def report_all_records(cls) -> RacpRequest:
        """Ask the server to send every stored record."""
        return cls(RacpOpcode.report_stored_records, RacpOperator.all_records)

    @classmethod
    def report_number_of_all_records(cls) -> RacpRequest:
        """Ask the server how many records it stores."""
        return cls(RacpOpcode.report_number_of_stored_records, RacpOperator.all_records)

    @classmethod
    def delete_all_records(cls) -> RacpRequest:
        """Ask the server to delete every stored record."""
        return cls(RacpOpcode.delete_stored_records, RacpOperator.all_records)

    @classmethod
    def abort(cls) -> RacpRequest:
        """Abort the running procedure."""
        return cls(RacpOpcode.abort_operation, RacpOperator.null)


@dataclass(frozen=True, slots=True)
class RacpNumberOfRecords:
    """Server response to :attr:`RacpOpcode.report_number_of_stored_records`."""

    count: int


@dataclass(frozen=True, slots=True)
class RacpResponse:
    """Server response code; ``request_opcode`` is raw so unknown op codes can be answered."""

    request_opcode: int
    code: RacpResponseCode


RacpMessage: TypeAlias = RacpRequest | RacpNumberOfRecords | RacpResponse


def _request_problem(opcode: RacpOpcode, operator: RacpOperator, operand_len: int) -> str | None:
    if opcode == RacpOpcode.abort_operation:
        if operator != RacpOperator.null or operand_len:
            return "abort operation takes the null operator and no operand"
        return None
    if operator == RacpOperator.null:
        return f"{opcode.name} needs a non-null operator"
    if operator in _FILTER_OPERATORS:
        if not operand_len:
            return f"operator {operator.name} needs an operand (filter parameters)"
    elif operand_len:
        return f"operator {operator.name} takes no operand, got {operand_len} byte(s)"
    return None


def decode_racp(data: BytesLike) -> RacpMessage:
    """Decode a 0x2A52 write or indication; :class:`GattDecodeError` on anything malformed."""
    n = len(data)
    if n < 2:
        raise decode_error(RACP, f"truncated: needs op code and operator (2 bytes), got {n}", data)
    op, operator = data[0], data[1]
    if op == RacpOpcode.number_of_stored_records_response:
        if operator != RacpOperator.null or n != 4:
            raise decode_error(RACP, "number of stored records response must be 05 00 <u16 count>", data)
        return RacpNumberOfRecords(U16.unpack_from(data, 2)[0])
    if op == RacpOpcode.response_code:
        if operator != RacpOperator.null or n != 4:
            raise decode_error(RACP, "response code must be 06 00 <request op code> <response code>", data)
        if not 1 <= data[3] <= len(RacpResponseCode):
            raise decode_error(RACP, f"unknown response code value {data[3]}", data)
        return RacpResponse(data[2], RacpResponseCode(data[3]))
    if op not in _REQUEST_OPCODES:
        raise decode_error(RACP, f"unsupported op code {op}", data)
    if operator > RacpOperator.last_record:
        raise decode_error(RACP, f"unknown operator {operator}", data)
    opcode, oper = RacpOpcode(op), RacpOperator(operator)
    problem = _request_problem(opcode, oper, n - 2)
    if problem is not None:
        raise decode_error(RACP, problem, data)
    return RacpRequest(opcode, oper, bytes(data[2:]))


def encode_racp(message: RacpMessage) -> bytes:
    """Encode a request or response for 0x2A52."""
    if isinstance(message, RacpRequest):
        if message.opcode not in _REQUEST_OPCODES:
            raise GattEncodeError(f"op code {message.opcode!r} is not a request")
        require_type(message.operator, RacpOperator, "RACP operator")
        problem = _request_problem(message.opcode, message.operator, len(message.operand))
        if problem is not None:
            raise GattEncodeError(problem)
        return bytes((message.opcode, message.operator)) + bytes(message.operand)
    if isinstance(message, RacpNumberOfRecords):
        count = check_uint("number of records", message.count, 0xFFFF)
        return bytes((RacpOpcode.number_of_stored_records_response, RacpOperator.null)) + U16.pack(count)
    require_type(message, RacpResponse, "RACP message")
    request = check_uint("request op code", message.request_opcode, 0xFF)
    require_type(message.code, RacpResponseCode, "RACP response code")
    return bytes((RacpOpcode.response_code, RacpOperator.null, request, message.code))
