"""Fixtures of the fhir tests: the real local FHIR server (Medplum's router in Node)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from wardwatch.fhir.testing import FhirTestServer


@pytest.fixture
async def fhir_server(tmp_path: Path) -> AsyncIterator[FhirTestServer]:
    """A FHIR R4 server on a free loopback port that validates what it stores; ``fhir_server.url``."""
    async with FhirTestServer(directory=tmp_path / "fhir") as server:
        yield server


@pytest.fixture
def consumer_service() -> str:
    """Whose dead letters the shared ``dead_letters`` fixture records."""
    return "fhir"
