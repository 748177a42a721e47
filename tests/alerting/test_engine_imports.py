"""The pure engine package imports, from the rest of ``alerting``, only the event and rule types."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "alerting" / "wardwatch" / "alerting" / "engine"
ALLOWED = {"wardwatch.alerting.events", "wardwatch.alerting.rules"}


def _alerting_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("wardwatch.alerting.") and not n.startswith("wardwatch.alerting.engine")}


def test_engine_imports_only_events_and_rules_from_alerting() -> None:
    found = {path.name: _alerting_imports(path) - ALLOWED for path in sorted(ENGINE.glob("*.py"))}
    assert {name: mods for name, mods in found.items() if mods} == {}


def test_capacity_module_reexports_the_engines_decision() -> None:
    from wardwatch.alerting import capacity
    from wardwatch.alerting.engine import capacity as engine_capacity

    assert capacity.capacity_change is engine_capacity.capacity_change
    assert capacity.OVER_CAPACITY in capacity.OPERATOR_RULES
