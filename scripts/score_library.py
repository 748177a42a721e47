"""Score the alarm engine and the naive baseline on the simulator's whole scenario library (prints JSON).

Renders every named scenario (`wardwatch sim render`) with its ground truth, merges the streams in time
order and runs `wardwatch alerting score` on them. Run: .venv/bin/python scripts/score_library.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

WARDWATCH = [sys.executable, "-m", "wardwatch.core"]


def _time(line: str) -> int:
    message = json.loads(line)
    if message.get("kind") == "vitals":
        return int(message["samples"][0]["t"])
    return int(message.get("t", 0))


def main() -> int:
    """Render, merge, score; print the score JSON."""
    listing = subprocess.run([*WARDWATCH, "sim", "list"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in listing.splitlines() if line.strip()]
    with tempfile.TemporaryDirectory(prefix="wardwatch-score-") as tmp:
        folder = Path(tmp)
        lines: list[str] = []
        truth: list[str] = []
        for name in names:
            samples, events = folder / f"{name}.jsonl", folder / f"{name}.truth.jsonl"
            subprocess.run(
                [*WARDWATCH, "sim", "render", name, "-o", str(samples), "--ground-truth", str(events)],
                check=True,
                capture_output=True,
            )
            lines += samples.read_text().splitlines()
            truth += events.read_text().splitlines()
        lines.sort(key=_time)
        (folder / "all.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "truth.jsonl").write_text("\n".join(truth) + "\n")
        result = subprocess.run(
            [*WARDWATCH, "alerting", "score", str(folder / "all.jsonl"), str(folder / "truth.jsonl")],
            capture_output=True,
            text=True,
            check=False,
        )
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
