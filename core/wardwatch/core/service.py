"""The command shape every long-running service shares: ``wardwatch NAME --config FILE [--log-level LEVEL]``.

Load and validate the config (errors print as ``wardwatch NAME: …`` and exit 2), set up logging once,
then run the service until SIGTERM or SIGINT sets its stop event.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

from wardwatch.core.config import load_config
from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import setup_logging

__all__ = [
    "STOP_SIGNALS",
    "cancel_on_stop_signals",
    "load_service_config",
    "on_stop_signals",
    "run_service",
    "service_parser",
]

#: What stops a service cleanly (systemd's stop, a container's stop, Ctrl-C).
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def on_stop_signals(callback: Callable[[], object]) -> None:
    """Call ``callback`` on the running loop when SIGTERM or SIGINT arrives (instead of dying at once)."""
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, callback)


def cancel_on_stop_signals() -> None:
    """Cancel the current task when SIGTERM or SIGINT arrives: its context managers unwind, so stores close
    and queued work stays queued. Suppress :class:`asyncio.CancelledError` where the task ends."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("cancel_on_stop_signals() must be called from inside a task")
    on_stop_signals(task.cancel)


class _HasLogLevel(Protocol):
    @property
    def log_level(self) -> str: ...


C = TypeVar("C", bound=_HasLogLevel)


def service_parser(prog: str, description: str, example_config: str) -> argparse.ArgumentParser:
    """The parser of ``wardwatch NAME --config FILE [--log-level LEVEL]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", required=True, help=f"TOML config file (see {example_config})")
    parser.add_argument("--log-level", default=None, help="override log_level from the config")
    return parser


def load_service_config(config_type: type[C], path: str, prog: str) -> C | None:
    """The validated config at ``path``, or ``None`` after printing what is wrong as ``{prog}: …``."""
    try:
        return load_config(config_type, path)
    except WardwatchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None


def run_service(
    name: str, config: C, run: Callable[[C, asyncio.Event], Awaitable[None]], log_level: str | None = None
) -> int:
    """Log as ``name``, then ``run(config, stop)`` until SIGTERM or SIGINT sets ``stop``; exit status 0."""
    setup_logging(name, log_level or config.log_level)

    async def serve() -> None:
        stop = asyncio.Event()
        on_stop_signals(stop.set)
        await run(config, stop)

    asyncio.run(serve())
    return 0
