"""``wardwatch up``: run the whole system locally (see :mod:`wardwatch.stack.up`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

from wardwatch.core.errors import WardwatchError
from wardwatch.core.logs import setup_logging
from wardwatch.core.service import cancel_on_stop_signals


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wardwatch up",
        description="Run wardwatch locally: broker, database, alerting, ingest, simulated patients, gateways.",
    )
    parser.add_argument("--state", type=Path, default=Path(".wardwatch"), help="state folder (reused between runs)")
    parser.add_argument("--scenario", default="demo", help="simulator scenario name or file (default: demo)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated-time compression (e.g. 4)")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--mqtt-port", type=int, default=None, help="broker port (default: a free one)")
    parser.add_argument("--api-port", type=int, default=None, help="alarm API port (default: a free one)")
    parser.add_argument("--influx-url", default=None, help="use this InfluxDB instead of starting one")
    parser.add_argument(
        "--influx-api",
        choices=["v1", "v2"],
        default="v1",
        help="v1: /write (InfluxDB 1.x, or 2.x/3.x compatibility); v2: InfluxDB 2.x/3.x with token, org, bucket",
    )
    parser.add_argument("--influx-org", default=None, help="v2 organisation (token: WW_INFLUX_TOKEN)")
    parser.add_argument("--influx-bucket", default=None, help="v2 bucket (create it, with its retention, first)")
    parser.add_argument(
        "--broker-credentials",
        type=Path,
        default=None,
        help="use an existing MQTT broker: a `wardwatch broker init` folder whose passwd/acl that broker loaded",
    )
    parser.add_argument(
        "--ble",
        choices=["sim", "bluez"],
        default="sim",
        help="sim: gateways reach the simulator over its bleak backend; bluez: the simulator on vhci and the "
        "gateways on this machine's BlueZ (needs a kernel with hci_vhci)",
    )
    parser.add_argument(
        "--fhir",
        action="store_true",
        help="also run the FHIR exporter (`wardwatch fhir`) into a local FHIR test server (needs node, scripts/setup)",
    )
    parser.add_argument("--fhir-url", default=None, help="with --fhir: export to this FHIR R4 server instead")
    parser.add_argument("--console-port", type=int, default=None, help="nurses' console port (default: a free one)")
    parser.add_argument("--no-console", action="store_true", help="do not start the nurses' web console")
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``wardwatch up``."""
    from wardwatch.stack.up import Stack, StackOptions

    args = _parser().parse_args(argv)
    setup_logging("up", "WARNING")
    options = StackOptions(
        state=args.state,
        scenario=args.scenario,
        speed=args.speed,
        duration_s=args.duration,
        mqtt_port=args.mqtt_port,
        api_port=args.api_port,
        influx_url=args.influx_url,
        influx_api=args.influx_api,
        # a token on the command line would show in the process list: take it from the environment
        influx_token=os.environ.get("WW_INFLUX_TOKEN"),
        influx_org=args.influx_org,
        influx_bucket=args.influx_bucket,
        broker_credentials=args.broker_credentials,
        ble=args.ble,
        fhir=args.fhir or args.fhir_url is not None,
        fhir_url=args.fhir_url,
        console=not args.no_console,
        console_port=args.console_port,
    )
    print(f"wardwatch up: starting (state in {args.state.resolve()})", flush=True)

    async def serve() -> None:
        cancel_on_stop_signals()
        await Stack(options).run()

    try:
        with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
            asyncio.run(serve())
    except WardwatchError as exc:
        print(f"wardwatch up: {exc}", file=sys.stderr)
        return 1
    print("wardwatch up: stopped", flush=True)
    return 0
