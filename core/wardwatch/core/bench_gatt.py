"""Benchmark the GATT codecs: µs per notification, median of repeats, printed as JSON.

Run: ``.venv/bin/python -m wardwatch.core.bench_gatt [--repeat N]``. Never asserts on speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import timeit
from collections.abc import Callable

from wardwatch.core.gatt import (
    decode,
    decode_heart_rate_measurement,
    decode_plx_continuous_measurement,
    decode_plx_spot_check_measurement,
    encode_heart_rate_measurement,
    encode_plx_continuous_measurement,
    encode_plx_spot_check_measurement,
    to_jsonable,
)

HR_2A37 = bytes.fromhex("1e46640033036603")  # HR 70, contact, 100 kJ, 2 RR intervals
PLX_2A5F = bytes.fromhex("1c61004800800000080034f0")  # + measurement/device status, PAI
PLX_2A5E = bytes.fromhex("1f62004b00e807021d173b3b200010000034f0")  # every field


def per_call_us(fn: Callable[[], object], repeat: int) -> float:
    """Median over ``repeat`` runs of the per-call time in µs (loop size from autorange)."""
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    runs = timer.repeat(repeat=repeat, number=number)
    return round(statistics.median(runs) / number * 1e6, 3)


def main(argv: list[str] | None = None) -> int:
    """Print the benchmark JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="timing runs per case (median is reported)")
    args = parser.parse_args(argv)

    hr = decode_heart_rate_measurement(HR_2A37)
    plx = decode_plx_continuous_measurement(PLX_2A5F)
    spot = decode_plx_spot_check_measurement(PLX_2A5E)
    cases: dict[str, Callable[[], object]] = {
        "hr_2a37_decode_us": lambda: decode_heart_rate_measurement(HR_2A37),
        "hr_2a37_encode_us": lambda: encode_heart_rate_measurement(hr),
        "plx_2a5f_decode_us": lambda: decode_plx_continuous_measurement(PLX_2A5F),
        "plx_2a5f_encode_us": lambda: encode_plx_continuous_measurement(plx),
        "plx_2a5e_decode_us": lambda: decode_plx_spot_check_measurement(PLX_2A5E),
        "plx_2a5e_encode_us": lambda: encode_plx_spot_check_measurement(spot),
        "hr_2a37_decode_by_uuid_us": lambda: decode("2a37", HR_2A37),
        "hr_2a37_decode_bytearray_us": lambda: decode_heart_rate_measurement(bytearray(HR_2A37)),
        "plx_2a5f_to_jsonable_us": lambda: to_jsonable(plx),
    }
    result: dict[str, object] = {name: per_call_us(fn, args.repeat) for name, fn in cases.items()}
    result["repeat"] = args.repeat
    result["python"] = platform.python_version()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
