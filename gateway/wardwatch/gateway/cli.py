"""``wardwatch gateway``: run the gateway, scan for wearables, check a config, benchmark.

::

    wardwatch gateway --config /etc/wardwatch/gateway.toml      run (also: ``gateway run --config``)
    wardwatch gateway check --config FILE                       validate the config and print a summary
    wardwatch gateway scan [--duration 10] [--adapter hci0]     list nearby heart-rate / oximeter devices
    wardwatch gateway bench [--notifications N] ...             print benchmark figures as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

from wardwatch.core.errors import ConfigError, WardwatchError
from wardwatch.core.logs import setup_logging
from wardwatch.core.service import cancel_on_stop_signals

if TYPE_CHECKING:
    from wardwatch.gateway.config import GatewayConfig

__all__ = ["main"]

EXIT_CONFIG: Final = 2
DEFAULT_CONFIG: Final = "/etc/wardwatch/gateway.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wardwatch gateway", description="BLE wearables -> MQTT edge gateway.")
    parser.add_argument(
        "--config", type=Path, default=None, help=f"config file (default: $WARDWATCH_CONFIG or {DEFAULT_CONFIG})"
    )
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run the gateway (the default)")
    run.add_argument("--config", type=Path, default=None, dest="run_config")
    check = commands.add_parser("check", help="validate the config and print a summary")
    check.add_argument("--config", type=Path, default=None, dest="run_config")
    scan = commands.add_parser("scan", help="list nearby heart-rate and pulse-oximeter devices")
    scan.add_argument("--duration", type=float, default=10.0, help="seconds to listen (default 10)")
    scan.add_argument("--adapter", default=None, help="e.g. hci1 (default: the system's default adapter)")
    scan.add_argument("--all", action="store_true", help="list every advertising device, not only wearables")
    scan.add_argument("--json", action="store_true", help="one JSON object per device")
    bench = commands.add_parser("bench", help="benchmark the gateway pipeline (prints JSON)")
    bench.add_argument("--devices", type=int, default=7)
    bench.add_argument("--notifications", type=int, default=20_000, help="notifications in the throughput run")
    bench.add_argument("--backlog", type=int, default=20_000, help="readings queued during the outage run")
    bench.add_argument("--in-flight", type=int, default=256)
    bench.add_argument("--paced-seconds", type=float, default=20.0, help="length of the paced (latency) run")
    bench.add_argument("--runs", type=int, default=1, help="runs per mode, alternating (medians are reported)")
    bench.add_argument(
        "--mode",
        choices=["both", "single", "batch"],
        default="both",
        help="single: one message per signal and notification; batch: one vitals_batch per device and commit",
    )
    return parser


def _kept_kit(config: GatewayConfig) -> tuple[str, str | None]:
    """The kit this gateway kept from the registry (beside its queue), checked against its connection slots.

    (a summary, why it is refused or None): refused when it binds more continuous devices than the adapter
    has slots.
    """
    from wardwatch.gateway.config import CONTINUOUS_ROLES
    from wardwatch.gateway.kit import KitState, kit_path

    path = kit_path(config.queue.path)
    kit = KitState(config.ward, config.gateway_id, path).load()
    if kit is None:
        return f"no kit kept in {path} yet: the registry's kit is not checked here", None
    current = kit.current_devices()
    continuous = sum(1 for device in current if device.role in CONTINUOUS_ROLES)
    slots = config.ble.max_connections
    summary = f"kit revision {kit.revision} kept in {path}: {len(current)} bound devices ({continuous} continuous)"
    if continuous > slots:
        return summary, (
            f"the kit kept in {path} (revision {kit.revision}) binds {continuous} continuous devices but "
            f"the adapter has {slots} connection slots (ble.max_connections): {continuous - slots} of them would "
            "never connect. Assign some of its patients' kits to another gateway in the registry"
        )
    return summary, None


def load_backend(spec: str) -> Callable[..., contextlib.AbstractAsyncContextManager[object]]:
    """Resolve ``module:callable`` (config ``ble.backend``): a plug-in bleak backend, loaded at run time."""
    module_name, _, attribute = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load bleak backend {spec!r}: {exc}", key="ble.backend") from None
    if not callable(factory):
        raise ConfigError(f"{spec!r} is not callable", key="ble.backend")
    return cast(Callable[..., contextlib.AbstractAsyncContextManager[object]], factory)


def _config_path(args: argparse.Namespace) -> Path:
    path = getattr(args, "run_config", None) or args.config or os.environ.get("WARDWATCH_CONFIG") or DEFAULT_CONFIG
    return Path(path)


def main(argv: list[str]) -> int:
    """Entry point of ``wardwatch gateway``."""
    args = _parser().parse_args(argv)
    command = args.command or "run"
    if command == "scan":
        from wardwatch.gateway.scan import scan_main

        setup_logging("gateway", "WARNING")
        return asyncio.run(
            scan_main(duration=args.duration, adapter=args.adapter, all_devices=args.all, as_json=args.json)
        )
    if command == "bench":
        from wardwatch.gateway.bench import bench_main

        setup_logging("gateway", "ERROR")  # the outage run provokes connection warnings on purpose
        figures = asyncio.run(
            bench_main(
                devices=args.devices,
                notifications=args.notifications,
                backlog=args.backlog,
                in_flight=args.in_flight,
                paced_seconds=args.paced_seconds,
                runs=args.runs,
                modes=("single", "batch") if args.mode == "both" else (args.mode,),
            )
        )
        print(json.dumps(figures, indent=2))
        return 0
    from wardwatch.gateway.config import load_gateway_config

    path = _config_path(args)
    try:
        config = load_gateway_config(path)
    except WardwatchError as exc:
        print(f"wardwatch gateway: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if command == "check":
        problem = config.capacity_problem()
        if problem is not None:
            print(f"wardwatch gateway: config {path} is refused: {problem}", file=sys.stderr)
            return EXIT_CONFIG
        kept, kit_problem = _kept_kit(config)
        if kit_problem is not None:
            print(f"wardwatch gateway: {kit_problem}", file=sys.stderr)
            return EXIT_CONFIG
        metrics = (
            f"metrics on http://{config.metrics.host}:{config.metrics.port}/metrics"
            if config.metrics.port
            else "no metrics endpoint"
        )
        print(
            f"config {path} is valid: gateway {config.gateway_id} in ward {config.ward}, "
            f"{len(config.devices)} bound devices ({len(config.continuous_devices)} continuous, "
            f"{config.ble.max_connections} connection slots) in its [[devices]] (the offline fallback until a kit "
            f"arrives over MQTT; {kept}), broker {config.mqtt.host}:{config.mqtt.port}"
            f" ({'TLS' if config.mqtt.tls else 'no TLS'}), queue {config.queue.path} (max {config.queue.max_messages}),"
            f" {metrics}"
        )
        return 0
    setup_logging("gateway", config.log_level)
    from wardwatch.gateway.app import Gateway

    async def serve() -> None:
        cancel_on_stop_signals()
        async with contextlib.AsyncExitStack() as stack:
            selected: object = None
            if config.ble.backend is not None:
                selected = await stack.enter_async_context(
                    load_backend(config.ble.backend)(**config.ble.backend_options)
                )
            # bleak's own backend= selection: the plug-in yields the client and scanner keyword arguments
            client_kwargs = getattr(selected, "client_kwargs", None)
            scanner_kwargs = getattr(selected, "scanner_kwargs", None)
            await Gateway(config, client_kwargs=client_kwargs, scanner_kwargs=scanner_kwargs).run()

    with contextlib.suppress(asyncio.CancelledError, KeyboardInterrupt):
        asyncio.run(serve())
    return 0
