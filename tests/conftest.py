"""Shared pytest fixtures for the whole test suite.

Sections (add new ones below, each with its own heading):

* Real servers: ``mosquitto``, ``secure_mosquitto`` and ``influxd`` start real child processes
  through :mod:`wardwatch.core.servers`, one per test, in the test's ``tmp_path`` (so their config
  and log stay there for a post-mortem). Tests that use them get the ``servers`` marker, so
  ``pytest -m "not servers"`` skips them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from wardwatch.core.servers import Influxd, Mosquitto
from wardwatch.core.testing import DeadLetters

# --- Real servers -------------------------------------------------------------------------------

SERVER_FIXTURES = frozenset({"mosquitto", "secure_mosquitto", "influxd", "fhir_server"})

#: The users of ``secure_mosquitto``; get their passwords with ``broker.credentials(user)``.
SECURE_USERS = ("ingest", "gw-01", "gw-02", "reader")

#: ACL of ``secure_mosquitto``: each gateway may write only below its own ward/gateway topics.
SECURE_ACL = """\
# ingest reads every wardwatch message
user ingest
topic read wardwatch/v1/#

# a gateway writes only under its own ward and gateway id
user gw-01
topic write wardwatch/v1/+/ward-a/gw-01/#

user gw-02
topic write wardwatch/v1/+/ward-a/gw-02/#

# reader (dashboards, tests) reads everything
user reader
topic read #
"""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-server fixture (directly or through another fixture)."""
    for item in items:
        if SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.servers)


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """A plain mosquitto broker: loopback, no TLS, anonymous clients allowed, no persistence."""
    async with Mosquitto(directory=tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
async def secure_mosquitto(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    """A TLS-only broker with random passwords for :data:`SECURE_USERS`, :data:`SECURE_ACL`, no anonymous.

    ``broker.endpoint("gw-01")`` gives host, port, CA file and credentials of one user;
    ``broker.credentials("gw-01")`` just the ``(username, password)``.
    """
    users = {user: secrets.token_urlsafe(16) for user in SECURE_USERS}
    async with Mosquitto(directory=tmp_path / "secure-mosquitto", users=users, acl=SECURE_ACL, tls=True) as broker:
        yield broker


@pytest.fixture
async def influxd(tmp_path: Path) -> AsyncIterator[Influxd]:
    """An InfluxDB 1.x server without auth and without databases; its HTTP API is at ``influxd.url``."""
    async with Influxd(directory=tmp_path / "influxd") as server:
        yield server


@pytest.fixture
def dead_letters(mosquitto: Mosquitto, consumer_service: str) -> Iterator[DeadLetters]:
    """A listener on ``wardwatch/v1/deadletter/{consumer_service}`` (a test package names its service)."""
    listener = DeadLetters(mosquitto, consumer_service)
    yield listener
    listener.close()
