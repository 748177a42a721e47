"""Fixtures every alerting test file may ask for."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from wardwatch.alerting.testing import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver on a free loopback port that records every page."""
    async with WebhookReceiver() as r:
        yield r
