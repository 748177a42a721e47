"""The browser tests' screenshot folder is a knob of the tests, not of the services they start."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _screenshots_knob_stays_with_the_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """``WARDWATCH_SCREENSHOTS`` (read when the test modules load) must not reach the started services: every
    ``WARDWATCH_*`` variable is a config override there, and an unknown key stops a service at start-up."""
    monkeypatch.delenv("WARDWATCH_SCREENSHOTS", raising=False)
