"""``wardwatch fhir --config FILE``: the FHIR exporter."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from wardwatch.core.config import load_config
from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import setup_logging
from wardwatch.fhir.config import FhirConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch fhir",
        description="MQTT vitals and device status -> FHIR R4 transaction Bundles (at-least-once, never duplicated).",
    )
    parser.add_argument("--config", required=True, help="TOML config file (see deploy/fhir/fhir.example.toml)")
    parser.add_argument("--log-level", default=None, help="override log_level from the config")
    return parser


async def _serve(config: FhirConfig) -> None:
    from wardwatch.fhir.app import run

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(config, stop=stop)


def main(argv: list[str]) -> int:
    """Entry point of the ``fhir`` subcommand."""
    args = _parser().parse_args(argv)
    try:
        config = load_config(FhirConfig, args.config)
    except WardwatchError as exc:
        print(f"wardwatch fhir: {exc}", file=sys.stderr)
        return 2
    setup_logging("fhir", args.log_level or config.log_level)
    asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
