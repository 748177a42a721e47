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


# --- module size and one way to open resources (issue 16) ------------------------------------------

MAX_MODULE_LINES = 600
# Modules another branch is splitting (issue 16); the merge empties this set.
OVERSIZED_UNTIL_SPLIT: set[str] = set()  # modules allowed over the limit while their split is under way
LIFECYCLE = PARTS["core"] / "lifecycle.py"


def _source_modules() -> list[Path]:
    """Every module outside the tests: the parts and the scripts."""
    return sorted(path for folder in [*PARTS.values(), ROOT / "scripts"] for path in folder.rglob("*.py"))


def _too_long(paths: list[Path], root: Path) -> dict[str, int]:
    lengths = {path.relative_to(root).as_posix(): len(path.read_text(encoding="utf-8").splitlines()) for path in paths}
    return {name: lines for name, lines in lengths.items() if lines > MAX_MODULE_LINES}


def test_no_module_outside_tests_is_over_600_lines() -> None:
    too_long = {name: n for name, n in _too_long(_source_modules(), ROOT).items() if name not in OVERSIZED_UNTIL_SPLIT}
    assert too_long == {}, f"split these by responsibility into modules of at most {MAX_MODULE_LINES} lines: {too_long}"


def test_the_oversized_allowance_names_only_modules_still_too_long() -> None:
    still_too_long = _too_long([ROOT / name for name in OVERSIZED_UNTIL_SPLIT if (ROOT / name).exists()], ROOT)
    assert sorted(OVERSIZED_UNTIL_SPLIT - still_too_long.keys()) == [], "split: remove them from OVERSIZED_UNTIL_SPLIT"


def test_the_length_check_counts_lines(tmp_path: Path) -> None:
    short, long = tmp_path / "short.py", tmp_path / "long.py"
    short.write_text("x = 1\n" * MAX_MODULE_LINES, encoding="utf-8")
    long.write_text("x = 1\n" * (MAX_MODULE_LINES + 1), encoding="utf-8")
    assert _too_long([short, long], tmp_path) == {"long.py": MAX_MODULE_LINES + 1}


def _unwinding_by_hand(path: Path) -> list[int]:
    """Lines where an ``except`` block closes an exit stack itself (``await self._stack.aclose()``), and
    ``except BaseException`` (or a bare ``except``) blocks in an ``__aenter__``: undoing a failed opening by hand
    (shutting down a thread pool, removing a directory) instead of pushing the undo on the exit stack."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for method in ast.walk(tree):
        if isinstance(method, ast.AsyncFunctionDef) and method.name == "__aenter__":
            handlers = [node for node in ast.walk(method) if isinstance(node, ast.ExceptHandler)]
            found += [h.lineno for h in handlers if h.type is None or ast.unparse(h.type) == "BaseException"]
    for handler in ast.walk(tree):
        if not isinstance(handler, ast.ExceptHandler):
            continue
        for node in ast.walk(handler):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "aclose":
                owner = node.func.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name.endswith("stack"):
                    found.append(node.lineno)
    return found


def test_resources_are_opened_one_way() -> None:
    """Closing what was entered when an ``__aenter__`` fails is written once: ``wardwatch.core.lifecycle.opening``."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in _source_modules()
        if path != LIFECYCLE
        for line in _unwinding_by_hand(path)
    ]
    assert found == [], f"enter resources with `async with opening(self._stack) as stack:` instead: {found}"


def test_the_unwinding_check_finds_the_hand_written_block(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text(
        "async def f(self):\n    try:\n        pass\n    except BaseException:\n        await self._stack.aclose()\n"
        "        raise\n",
        encoding="utf-8",
    )
    assert _unwinding_by_hand(sample) == [5]
    pool = tmp_path / "pool.py"
    pool.write_text(
        "class Q:\n    async def __aenter__(self):\n        try:\n            await self._run(self._open)\n"
        "        except BaseException:\n            self._executor.shutdown(wait=True)\n            raise\n",
        encoding="utf-8",
    )
    assert _unwinding_by_hand(pool) == [5]
    assert _unwinding_by_hand(LIFECYCLE) != []  # the one place it is written
