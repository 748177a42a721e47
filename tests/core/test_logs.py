"""Logging: JSON lines off a terminal, extras kept; rate-limited warnings per key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from wardwatch.core.logs import RateLimitedLog, setup_logging


@pytest.fixture
def restore_root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield root
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_when_not_a_terminal(restore_root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging("ingest", "INFO", stream=stream)
    logging.getLogger("wardwatch.test").info("stored %d points", 5, extra={"batch": 5})
    entry = json.loads(stream.getvalue())
    assert entry["msg"] == "stored 5 points"
    assert (entry["service"], entry["level"], entry["batch"]) == ("ingest", "info", 5)
    assert entry["ts"].endswith("Z")


def test_rate_limited_log_once_per_key_per_interval(restore_root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    setup_logging("gateway", "INFO", stream=stream)
    limited = RateLimitedLog(logging.getLogger("wardwatch.test"), interval_s=60)
    assert limited.warning("d-1", "malformed", now=0.0)
    assert not limited.warning("d-1", "malformed", now=30.0)
    assert limited.warning("d-2", "malformed", now=30.0)
    assert limited.warning("d-1", "malformed", now=61.0)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["key"], line["suppressed_since_last"]) for line in lines] == [("d-1", 0), ("d-2", 0), ("d-1", 1)]
