"""`wardwatch up --fhir`: the whole local stack exports the simulated ward into the local FHIR server."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from wardwatch.core.servers import wait_for
from wardwatch.stack.up import StackOptions, running_stack

pytestmark = pytest.mark.slow


def _search(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        return [entry["resource"] for entry in json.load(response).get("entry", [])]


async def test_up_with_fhir_exports_the_ward(tmp_path: Path) -> None:
    options = StackOptions(state=tmp_path / "state", scenario="demo", quiet=True, fhir=True)
    async with running_stack(options, echo=lambda _line: None) as stack:
        base = stack.summary["fhir"]
        heart_rates: list[dict[str, Any]] = []

        def every_patient_has_a_heart_rate() -> bool:
            heart_rates[:] = _search(f"{base}Observation?code=http://loinc.org|8867-4&_count=1000")
            subjects = {o["subject"]["reference"] for o in heart_rates}
            return len(subjects) == 6  # the demo scenario's patients

        # the first whole minute closes within two minutes (plus the 10 s grace)
        await wait_for(every_patient_has_a_heart_rate, 150, what="heart rates of every patient", max_interval=2.0)
        patients = _search(f"{base}Patient?_count=100")
        assert {p["identifier"][0]["value"] for p in patients} == {f"p-d0{i}" for i in range(6)}
        assert all(set(p) <= {"resourceType", "id", "meta", "identifier"} for p in patients)  # no other identity
    assert (tmp_path / "state" / "fhir" / "resources.json").exists()  # saved when the stack stopped
