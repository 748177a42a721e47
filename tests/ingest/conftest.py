"""Fixtures of the ingest tests (helpers live in :mod:`wardwatch.ingest.testing`)."""

from __future__ import annotations

import pytest


@pytest.fixture
def consumer_service() -> str:
    """Whose dead letters the shared ``dead_letters`` fixture records."""
    return "ingest"
