"""``wardwatch fhir --config FILE``: the FHIR exporter."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from datetime import UTC, datetime

from wardwatch.core.config import load_config
from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import setup_logging
from wardwatch.core.service import load_service_config, run_service, service_parser
from wardwatch.fhir.config import FhirConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    return service_parser(
        "wardwatch fhir",
        "MQTT vitals, device status and alarms -> FHIR R4 transaction Bundles (at-least-once, never duplicated).",
        "deploy/fhir/fhir.example.toml",
    )


def _backfill_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch fhir backfill",
        description="Export one patient's vitals for a time range from InfluxDB (never duplicates). Prints JSON.",
    )
    parser.add_argument("--config", required=True, help="the exporter's TOML config ([influx] says where to read)")
    parser.add_argument("--patient", required=True, help="pseudonymous patient id")
    parser.add_argument(
        "--from", dest="start", required=True, type=_instant, help="ISO 8601 start, e.g. 2026-12-04T08:00Z"
    )
    parser.add_argument("--to", dest="end", required=True, type=_instant, help="ISO 8601 end (exclusive)")
    return parser


def _instant(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time such as 2026-12-04T08:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone: add Z for UTC")
    return int(moment.astimezone(UTC).timestamp() * 1000)


async def _serve(config: FhirConfig, stop: asyncio.Event) -> None:
    from wardwatch.fhir.app import run

    await run(config, stop=stop)


def main(argv: list[str]) -> int:
    """Entry point of the ``fhir`` subcommand (``backfill`` and ``bench`` are its subcommands)."""
    if argv and argv[0] == "backfill":
        return _run_backfill(_backfill_parser().parse_args(argv[1:]))
    if argv and argv[0] == "testserver":
        return _run_testserver(argv[1:])
    if argv and argv[0] == "bench":
        from wardwatch.fhir.bench import main as bench_main

        return bench_main(argv[1:])
    args = _parser().parse_args(argv)
    config = load_service_config(FhirConfig, args.config, "wardwatch fhir")
    if config is None:
        return 2
    return run_service("fhir", config, _serve, args.log_level)


def _run_testserver(argv: list[str]) -> int:
    """Run the local FHIR test server (Node) in the foreground: for ``wardwatch up --fhir`` and by hand."""
    import shutil

    from wardwatch.fhir.testing import TESTSERVER_DIR

    parser = argparse.ArgumentParser(
        prog="wardwatch fhir testserver",
        description="The local FHIR R4 server of the tests (Medplum's router in Node, in memory). Not for patients.",
    )
    parser.add_argument("--port", type=int, default=8103)
    parser.add_argument("--data", default=None, help="keep resources in this file across restarts")
    args = parser.parse_args(argv)
    node = shutil.which("node")
    if node is None or not (TESTSERVER_DIR / "node_modules").is_dir():
        print(
            f"wardwatch fhir testserver: needs node and `npm ci` in {TESTSERVER_DIR} (scripts/setup)", file=sys.stderr
        )
        return 3
    command = [node, str(TESTSERVER_DIR / "server.mjs"), "--port", str(args.port)]
    if args.data:
        command += ["--data", args.data]
    return _exec(command)


def _exec(command: list[str]) -> int:
    """Replace this process with ``command`` (signals then reach it directly); never returns."""
    import os

    os.execv(command[0], command)  # noqa: S606


def _run_backfill(args: argparse.Namespace) -> int:
    from wardwatch.fhir.backfill import backfill

    try:
        config = load_config(FhirConfig, args.config)
        setup_logging("fhir", config.log_level)
        report = asyncio.run(backfill(config, args.patient, args.start, args.end))
    except WardwatchError as exc:
        print(f"wardwatch fhir backfill: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(report), indent=2))
    return 1 if report.rejected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
