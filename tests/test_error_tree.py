"""One error tree: every exception a part defines derives from its part-level base (docs/errors.md)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from wardwatch.alerting.errors import AlertingError
from wardwatch.console.errors import ConsoleError
from wardwatch.core.errors import WardwatchError
from wardwatch.fhir.errors import FhirError
from wardwatch.firmware_sim.errors import SimError
from wardwatch.gateway.errors import GatewayError
from wardwatch.ingest.errors import IngestError
from wardwatch.stack.errors import StackError

PART_BASES: dict[str, type[WardwatchError]] = {
    "wardwatch.core": WardwatchError,
    "wardwatch.alerting": AlertingError,
    "wardwatch.console": ConsoleError,
    "wardwatch.fhir": FhirError,
    "wardwatch.firmware_sim": SimError,
    "wardwatch.gateway": GatewayError,
    "wardwatch.ingest": IngestError,
    "wardwatch.stack": StackError,
}


def _exceptions_defined_in(package_name: str) -> list[type[BaseException]]:
    package = importlib.import_module(package_name)
    found: list[type[BaseException]] = []
    for module_info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
        if module_info.name.endswith(".__main__"):
            continue  # runs the command line when imported
        module = importlib.import_module(module_info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            defined_here = value.__module__ == module.__name__
            if defined_here and issubclass(value, BaseException) and not value.__name__.startswith("_"):
                found.append(value)
    return found


@pytest.mark.parametrize("package_name", sorted(PART_BASES))
def test_every_public_error_of_a_part_derives_from_its_base(package_name: str) -> None:
    base = PART_BASES[package_name]
    errors = _exceptions_defined_in(package_name)
    assert base in errors, f"{package_name}: the walk did not find its base {base.__name__}"
    strays = [f"{error.__module__}.{error.__qualname__}" for error in errors if not issubclass(error, base)]
    assert not strays, f"derive these from {base.__name__} (see docs/errors.md): {strays}"
