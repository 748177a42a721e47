"""Fixtures of the ingest tests (helpers live in :mod:`wardwatch.ingest.testing`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wardwatch.core.servers import Mosquitto
from wardwatch.ingest.testing import DeadLetters


@pytest.fixture
def dead_letters(mosquitto: Mosquitto) -> Iterator[DeadLetters]:
    """A listener on ``wardwatch/v1/deadletter/ingest``."""
    listener = DeadLetters(mosquitto)
    yield listener
    listener.close()
