"""``wardwatch gatt``: decode characteristic bytes to JSON, list supported characteristics.

Called by the core dispatcher as ``gatt_main(argv_after_gatt)``. Exit codes: 0 ok, 2 bad input
(usage, malformed hex, malformed bytes, unknown UUID) with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import NoReturn

from wardwatch.core.errors import GattDecodeError
from wardwatch.core.profiles import CODECS, codec

from .registry import to_jsonable

__all__ = ["gatt_main"]

_HEX_SEPARATORS = re.compile(r"[\s:\-_]+")
PROG = "wardwatch gatt"


class _UsageError(Exception):
    """argparse error, reported by :func:`gatt_main` as one line + exit 2."""


class _Exit(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Decode Bluetooth GATT characteristic values.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    dec = sub.add_parser("decode", help="decode hex bytes of a characteristic to JSON")
    dec.add_argument("uuid", help="characteristic UUID: 2a37, 0x2A37 or the full 128-bit form")
    dec.add_argument("hex", nargs="+", help="value bytes in hex; spaces and colons allowed")
    dec.add_argument("--pretty", action="store_true", help="indent the JSON")
    sub.add_parser("list", help="list the supported characteristics")
    return parser


def parse_hex(text: str) -> bytes:
    """Bytes from hex with space/colon/dash separators and optional ``0x`` prefixes per group."""
    groups = _HEX_SEPARATORS.split(text.strip())
    cleaned = "".join(g[2:] if g[:2].lower() == "0x" else g for g in groups)
    if len(cleaned) % 2:
        raise ValueError(f"odd number of hex digits ({len(cleaned)})")
    return bytes.fromhex(cleaned)


def _decode(uuid: str, hex_text: str, pretty: bool) -> int:
    try:
        data = parse_hex(hex_text)
    except ValueError as exc:
        print(f"{PROG}: error: malformed hex {hex_text!r}: {exc}", file=sys.stderr)
        return 2
    try:
        characteristic = codec(uuid)
        value = characteristic.decode(data)
    except GattDecodeError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    out = {"characteristic": characteristic.name, "uuid": characteristic.uuid, **to_jsonable(value)}
    print(json.dumps(out, indent=2 if pretty else None, ensure_ascii=False))
    return 0


def _list() -> int:
    for c in sorted(CODECS.values(), key=lambda c: c.uuid16):
        print(f"0x{c.uuid16:04X}  {c.uuid}  {c.name}")
    return 0


def gatt_main(argv: list[str]) -> int:
    """Run ``wardwatch gatt <argv...>`` and return the exit code."""
    try:
        args = _parser().parse_args(argv)
    except _UsageError as exc:
        print(f"{PROG}: error: {exc} (see {PROG} --help)", file=sys.stderr)
        return 2
    except _Exit as exc:
        return exc.status
    if args.command == "decode":
        return _decode(args.uuid, " ".join(args.hex), args.pretty)
    return _list()
