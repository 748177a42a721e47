"""Wire-schema cost per message: msgspec typed decode/encode vs the standard json module (prints JSON).

Run: ``.venv/bin/python -m wardwatch.core.bench_schema``
"""

from __future__ import annotations

import json
import statistics
import timeit

from wardwatch.core import schema
from wardwatch.core.schema import Quality, Sample, Signal, Vitals

MESSAGE = Vitals(
    patient="p-k3v9q2m7x4",
    device="d-ox-0001",
    gateway="gw-0001",
    signal=Signal.SPO2,
    seq=123456,
    samples=(Sample(t=1_732_540_000_123, v=97.0, q=(Quality.LOW_PERFUSION,)),),
)
PAYLOAD = schema.encode(MESSAGE)


def _median_us(fn: object, number: int = 20_000, repeat: int = 7) -> float:
    runs = timeit.repeat(fn, number=number, repeat=repeat)  # type: ignore[arg-type]
    return statistics.median(runs) / number * 1e6


def _stdlib_decode_and_validate() -> None:
    data = json.loads(PAYLOAD)
    assert data["v"] == 1
    assert data["kind"] == "vitals"
    for sample in data["samples"]:
        float(sample["v"])


def main() -> None:
    """Print medians of 7 repeats, in µs per message."""
    figures = {
        "payload_bytes": len(PAYLOAD),
        "msgspec_decode_validated_us": _median_us(lambda: schema.decode_vitals(PAYLOAD)),
        "msgspec_encode_us": _median_us(lambda: schema.encode(MESSAGE)),
        "stdlib_json_loads_minimal_checks_us": _median_us(_stdlib_decode_and_validate),
        "stdlib_json_dumps_us": _median_us(lambda: json.dumps(json.loads(PAYLOAD))),
    }
    figures["decode_ratio_stdlib_over_msgspec"] = (
        figures["stdlib_json_loads_minimal_checks_us"] / figures["msgspec_decode_validated_us"]
    )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
