"""``wardwatch ingest --config FILE``, ``wardwatch ingest schema --config FILE`` and ``wardwatch bench ingest``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import msgspec

from wardwatch.core.errors import WardwatchError
from wardwatch.core.service import load_service_config, run_service, service_parser
from wardwatch.ingest.config import IngestConfig

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    return service_parser(
        "wardwatch ingest", "MQTT vitals -> InfluxDB (at-least-once).", "deploy/ingest/ingest.example.toml"
    )


def _bench_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch bench ingest",
        description="Publish a realistic vitals stream into a real mosquitto; measure ingest into a real influxd "
        "against a bare paho subscriber on the same stream. Prints JSON.",
    )
    parser.add_argument("--messages", type=int, default=50_000, help="messages per phase (keep under ~60k)")
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5, help="runs per phase; medians are reported")
    parser.add_argument("--max-points", type=int, default=5000, help="ingest batch.max_points")
    return parser


def _schema_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch ingest schema",
        description="Create (or align) the database, retention policies and downsampling continuous query once, "
        "then exit (InfluxDB 1.x). Run it as an admin (WARDWATCH_INFLUX__USERNAME/__PASSWORD) so that ingest "
        "itself can run as a write-only user with influx.create_schema = false.",
    )
    parser.add_argument("--config", required=True, help="the ingest TOML config (its [influx] section is used)")
    return parser


async def create_schema(config: IngestConfig) -> dict[str, str]:
    """Make the v1 schema of ``config.influx`` now (whatever its ``create_schema`` says); what was made."""
    from wardwatch.ingest.sinks import V1Sink

    settings = msgspec.structs.replace(config.influx, create_schema=True)
    async with V1Sink(settings) as sink:
        await sink.ensure_schema()
        return {
            "database": settings.database,
            "raw_policy": settings.raw_policy,
            "downsampled_policy": settings.downsampled_policy,
            "downsampled_measurement": sink.downsampled_measurement,
        }


async def _serve(config: IngestConfig, stop: asyncio.Event) -> None:
    from wardwatch.ingest.app import run

    await run(config, stop=stop)


def main(argv: list[str]) -> int:
    """Entry point of the ``ingest`` subcommand."""
    if argv and argv[0] == "bench":
        from wardwatch.ingest.bench import run_bench

        args = _bench_parser().parse_args(argv[1:])
        result = asyncio.run(
            run_bench(messages=args.messages, patients=args.patients, repeat=args.repeat, max_points=args.max_points)
        )
        print(json.dumps(result, indent=2))
        return 0
    schema = bool(argv) and argv[0] == "schema"
    args = (_schema_parser() if schema else _parser()).parse_args(argv[1:] if schema else argv)
    config = load_service_config(IngestConfig, args.config, "wardwatch ingest")
    if config is None:
        return 2
    if schema:
        if config.influx.api != "v1":
            print("wardwatch ingest schema: only for influx.api = 'v1' (v2: use `influx`)", file=sys.stderr)
            return 2
        try:
            made = asyncio.run(create_schema(config))
        except WardwatchError as exc:
            print(f"wardwatch ingest schema: {exc} (run it as an InfluxDB admin)", file=sys.stderr)
            return 1
        print(json.dumps(made, indent=2))
        return 0
    return run_service("ingest", config, _serve, args.log_level)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
