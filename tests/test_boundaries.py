"""Import walk: the core imports no part; each part imports only the core and itself; heavy libraries stay home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PARTS = {
    "core": ROOT / "core" / "wardwatch" / "core",
    "gateway": ROOT / "gateway" / "wardwatch" / "gateway",
    "ingest": ROOT / "ingest" / "wardwatch" / "ingest",
    "alerting": ROOT / "alerting" / "wardwatch" / "alerting",
    "firmware_sim": ROOT / "firmware-sim" / "wardwatch" / "firmware_sim",
    "stack": ROOT / "stack" / "wardwatch" / "stack",
    "fhir": ROOT / "fhir" / "wardwatch" / "fhir",
    "console": ROOT / "console" / "wardwatch" / "console",
}

# Third-party libraries each part must not import (a Raspberry Pi installs the gateway without scipy...).
FORBIDDEN_LIBRARIES = {
    "core": {"bleak", "bumble", "numpy", "scipy", "aiohttp", "influxdb_client", "wfdb", "aiomqtt"},
    "gateway": {"bumble", "numpy", "scipy", "influxdb_client", "wfdb", "aiohttp"},
    "ingest": {"bleak", "bumble", "numpy", "scipy", "wfdb"},
    "alerting": {"bleak", "bumble", "influxdb_client", "wfdb"},
    "firmware_sim": {"influxdb_client"},
    # the local stack runs every part as its own process: it links none of their libraries
    "stack": {"bleak", "bumble", "numpy", "scipy", "influxdb_client", "wfdb"},
    # the exporter speaks MQTT and HTTP; backfill reads InfluxDB over HTTP without influxdb_client
    "fhir": {"bleak", "bumble", "numpy", "scipy", "influxdb_client", "wfdb"},
    # the console's back end speaks HTTP to the alerting API and InfluxDB, nothing else
    "console": {"bleak", "bumble", "numpy", "scipy", "influxdb_client", "wfdb", "paho"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _violations(part: str) -> list[str]:
    problems = []
    for path in sorted(PARTS[part].rglob("*.py")):
        for line, module in _imports(path):
            top, _, rest = module.partition(".")
            where = f"{path.relative_to(ROOT)}:{line} imports {module}"
            if top == "wardwatch":
                other = rest.split(".")[0]
                if other not in {"core", part}:
                    problems.append(f"{where} (a part may import only wardwatch.core and itself)")
            elif top in FORBIDDEN_LIBRARIES[part]:
                problems.append(f"{where} ({top} does not belong in {part})")
    return problems


@pytest.mark.parametrize("part", sorted(PARTS))
def test_part_respects_boundaries(part: str) -> None:
    assert PARTS[part].is_dir()
    assert _violations(part) == []


def test_no_namespace_init_files() -> None:
    """PEP 420: no wardwatch/__init__.py anywhere, or the parts would shadow each other."""
    assert list(ROOT.glob("*/wardwatch/__init__.py")) == []


def test_walker_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import numpy\nfrom wardwatch.gateway import app\nfrom . import sibling\n", encoding="utf-8")
    assert _imports(sample) == [(1, "numpy"), (2, "wardwatch.gateway")]
