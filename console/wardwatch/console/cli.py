"""``wardwatch console --config FILE``: the nurses' web console."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from wardwatch.console.config import ConsoleConfig
from wardwatch.core.config import load_config
from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import setup_logging
from wardwatch.core.service import on_stop_signals

__all__ = ["main"]

_log = logging.getLogger("wardwatch.console")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch console",
        description="The nurses' web console: ward board, alarms, trends and audit, over the alerting API.",
    )
    parser.add_argument("--config", required=True, help="TOML config file (see docs/console.md)")
    parser.add_argument("--log-level", default=None, help="override log_level from the config")
    return parser


async def _serve(config: ConsoleConfig) -> None:
    from wardwatch.console.app import serve_console

    stop = asyncio.Event()
    on_stop_signals(stop.set)
    async with serve_console(config) as port:
        scheme = "https" if config.tls_cert is not None else "http"
        _log.info("console serving on %s://%s:%d/ for ward %s", scheme, config.host, port, config.ward)
        await stop.wait()


def main(argv: list[str]) -> int:
    """Entry point of the ``console`` subcommand (``bench``: the board benchmark)."""
    if argv and argv[0] == "bench":
        from wardwatch.console.bench import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        config = load_config(ConsoleConfig, args.config)
    except WardwatchError as exc:
        print(f"wardwatch console: {exc}", file=sys.stderr)
        return 2
    setup_logging("console", args.log_level or config.log_level)
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
