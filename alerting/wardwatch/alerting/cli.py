"""``wardwatch alerting``: run the service, replay recordings, manage users and tokens, benchmark.

::

    wardwatch alerting --config FILE                 run the service (same as ``run --config FILE``)
    wardwatch alerting replay ...                    the engine's offline replay
    wardwatch alerting score ...                     engine vs naive baseline against ground truth
    wardwatch alerting cinc2015 DIR [--profile P]    PhysioNet/CinC 2015 false-alarm score (JSON)
    wardwatch alerting user add NAME --role nurse --config FILE      (password from stdin or
                                                     WW_ALERTING_PASSWORD)
    wardwatch alerting user list|disable NAME --config FILE
    wardwatch alerting token create NAME --role viewer [--ttl-days N] --config FILE
    wardwatch alerting audit verify --config FILE      check the audit chain, its MACs and head (JSON;
                                                     exit 1 if broken); safe while the service runs
    wardwatch bench alerting                         replay throughput + end-to-end latency (JSON)
    wardwatch bench alerting --skip-replay --login-flood-per-s 200    ... under a login flood
    wardwatch bench alerting --skip-replay --live-streams 20          ... with 20 console streams (+1 stalled)
    wardwatch bench alerting --skip-replay --console-sessions 20      ... page latency with 20 console sessions
                                                     streams open vs closed, in one run (needs the console extra)

``--config`` may also come from ``WARDWATCH_CONFIG``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Final

from wardwatch.core.errors import WardwatchError
from wardwatch.core.service import cancel_on_stop_signals

EXIT_USAGE: Final = 2
PASSWORD_ENV: Final = "WW_ALERTING_PASSWORD"  # noqa: S105 - the variable's name, not a password


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _config_path(value: str | None) -> str:
    path = value or os.environ.get("WARDWATCH_CONFIG")
    if not path:
        raise WardwatchError("no configuration: pass --config FILE or set WARDWATCH_CONFIG")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wardwatch alerting", description="Clinical alarm manager and pager.")
    parser.add_argument("--config", help="alerting TOML file (or WARDWATCH_CONFIG)")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run the alerting service")
    run.add_argument("--config", dest="run_config", help="alerting TOML file")

    user = sub.add_parser("user", help="manage API users")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user (password from stdin or WW_ALERTING_PASSWORD)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "nurse", "charge_nurse", "doctor", "admin"])
    add.add_argument("--config", dest="sub_config")
    passwd = user_sub.add_parser("passwd", help="change a user's password")
    passwd.add_argument("name")
    passwd.add_argument("--config", dest="sub_config")
    disable = user_sub.add_parser("disable", help="disable a user (ends their sessions)")
    disable.add_argument("name")
    disable.add_argument("--config", dest="sub_config")
    listing = user_sub.add_parser("list", help="list users")
    listing.add_argument("--config", dest="sub_config")

    token = sub.add_parser("token", help="manage machine tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="create a machine token (printed once)")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=["viewer", "nurse", "charge_nurse", "doctor", "admin"])
    create.add_argument("--ttl-days", type=float, default=None)
    create.add_argument("--config", dest="sub_config")

    audit = sub.add_parser("audit", help="the audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the chain, its MACs and the signed head (exit 1 if broken)")
    verify.add_argument("--config", dest="sub_config")

    key = sub.add_parser(
        "registry-key", help="create the registry's identity key file (32 random bytes, mode 0600; never overwrites)"
    )
    key.add_argument("path", type=Path, help="where [registry] identity_key_file will point (not beside backups)")

    bench = sub.add_parser("bench", help="replay throughput and end-to-end paging latency (prints JSON)")
    bench.add_argument(
        "--patients", default="1000", help="patients, or a comma-separated list (one run each, one JSON)"
    )
    bench.add_argument("--load-workers", type=int, default=0, help="publishing processes (0: by load)")
    bench.add_argument("--replay-gateways", type=int, default=0, help="gateways replaying a backlog meanwhile")
    bench.add_argument("--replay-s", type=int, default=600, help="seconds of backlog per replaying gateway")
    bench.add_argument("--replay-batch", type=int, default=30, help="backlog samples per message")
    bench.add_argument(
        "--samples-per-message", type=int, default=1, help="live samples per message (every k seconds k samples)"
    )
    bench.add_argument("--warmup-s", type=float, default=5.0)
    bench.add_argument("--spread-s", type=float, default=20.0, help="alarm onsets spread over this long")
    bench.add_argument("--skip-replay", action="store_true")
    bench.add_argument("--skip-e2e", action="store_true")
    bench.add_argument(
        "--login-flood-per-s", type=float, default=0.0, help="login attempts per second while the patients stream"
    )
    bench.add_argument("--login-flood-clients", type=int, default=20, help="addresses the flood comes from")
    bench.add_argument("--login-hash-executor", choices=["thread", "process"], default="thread")
    bench.add_argument(
        "--live-streams", type=int, default=0, help="console live streams (SSE) open while the patients stream"
    )
    bench.add_argument(
        "--console-sessions",
        type=int,
        default=0,
        help="page latency with this many console sessions' live streams open vs closed, alternating in one run "
        "(the real console back end; --spread-s 40 recommended)",
    )
    return parser


def _read_password(prompt: str) -> str:
    from_env = os.environ.get(PASSWORD_ENV)
    if from_env:
        return from_env
    if sys.stdin.isatty():
        first = getpass.getpass(prompt)
        if getpass.getpass("again: ") != first:
            raise WardwatchError("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def _users(args: argparse.Namespace, config_file: str) -> int:
    from wardwatch.alerting.app import open_store
    from wardwatch.alerting.audit import AuditEntry
    from wardwatch.alerting.auth import Authenticator, Role
    from wardwatch.alerting.settings import load_alerting_config

    config = load_alerting_config(config_file)
    with open_store(config) as store:
        auth = Authenticator(store)
        actor = f"cli:{getpass.getuser()}"
        if args.user_command == "add":
            auth.add_user(args.name, Role(args.role), _read_password(f"password for {args.name}: "), _now_ms())
            store.audit(
                AuditEntry(
                    t=_now_ms(), actor=actor, action="user_added", details={"user": args.name, "role": args.role}
                )
            )
            print(f"user {args.name} ({args.role}) created")
        elif args.user_command == "passwd":
            auth.set_password(args.name, _read_password(f"new password for {args.name}: "))
            store.audit(AuditEntry(t=_now_ms(), actor=actor, action="password_changed", details={"user": args.name}))
            print(f"password of {args.name} changed")
        elif args.user_command == "disable":
            if not store.set_user(args.name, disabled=True):
                raise WardwatchError(f"no user {args.name!r}")
            store.audit(AuditEntry(t=_now_ms(), actor=actor, action="user_disabled", details={"user": args.name}))
            print(f"user {args.name} disabled")
        else:
            for user in store.users():
                flag = "\tdisabled" if user.disabled else ""
                print(f"{user.name}\t{user.role}{flag}")
    return 0


def _tokens(args: argparse.Namespace, config_file: str) -> int:
    from wardwatch.alerting.app import open_store
    from wardwatch.alerting.audit import AuditEntry
    from wardwatch.alerting.auth import Authenticator, Role
    from wardwatch.alerting.settings import load_alerting_config

    config = load_alerting_config(config_file)
    with open_store(config) as store:
        ttl = round(args.ttl_days * 86_400_000) if args.ttl_days is not None else None
        token = Authenticator(store).create_machine_token(args.name, Role(args.role), _now_ms(), ttl)
        store.audit(
            AuditEntry(
                t=_now_ms(),
                actor=f"cli:{getpass.getuser()}",
                action="token_created",
                details={"name": args.name, "role": args.role},
            )
        )
    print(token)
    return 0


def _audit(config_file: str) -> int:
    import dataclasses

    from wardwatch.alerting.app import open_store
    from wardwatch.alerting.settings import load_alerting_config

    with open_store(load_alerting_config(config_file)) as store:
        check = store.check_audit()
    print(json.dumps(dataclasses.asdict(check), indent=2))
    return 0 if check.intact else 1


def _run(config_file: str) -> int:
    from wardwatch.alerting.app import run
    from wardwatch.alerting.settings import load_alerting_config
    from wardwatch.core.logs import setup_logging

    config = load_alerting_config(config_file)
    setup_logging("alerting", config.log_level)

    async def until_signalled() -> None:
        cancel_on_stop_signals()  # stop cleanly: the store is closed, pages stay queued
        with contextlib.suppress(asyncio.CancelledError):
            await run(config)

    asyncio.run(until_signalled())
    return 0


def _bench(args: argparse.Namespace) -> int:
    result: dict[str, object] = {"benchmark": "alerting"}
    if not args.skip_replay:
        import io

        from wardwatch.alerting import bench_replay

        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            code = bench_replay.bench_main([])
        if code != 0:
            return code
        result["replay"] = json.loads(captured.getvalue())
    if args.console_sessions > 0:
        from wardwatch.alerting.bench_console import sessions_under_load

        figures = asyncio.run(
            sessions_under_load(
                patients=int(args.patients),
                sessions=args.console_sessions,
                warmup_s=args.warmup_s,
                spread_s=args.spread_s,
            )
        )
        print(json.dumps({"benchmark": "alerting", "console_sessions": figures}, indent=2))
        return 0
    if not args.skip_e2e:
        from wardwatch.alerting.bench_e2e import end_to_end

        try:
            sizes = [int(n) for n in str(args.patients).split(",")]
        except ValueError:
            print(f"--patients takes numbers separated by commas, not {args.patients!r}", file=sys.stderr)
            return EXIT_USAGE
        runs = [
            asyncio.run(
                end_to_end(
                    patients=n,
                    warmup_s=args.warmup_s,
                    spread_s=args.spread_s,
                    login_flood_per_s=args.login_flood_per_s,
                    flood_clients=args.login_flood_clients,
                    hash_executor=args.login_hash_executor,
                    workers=args.load_workers,
                    replay_gateways=args.replay_gateways,
                    replay_s=args.replay_s,
                    replay_batch=args.replay_batch,
                    samples_per_message=args.samples_per_message,
                    live_streams=args.live_streams,
                )
            )
            for n in sizes
        ]
        result["end_to_end"] = runs[0] if len(runs) == 1 else runs
    print(json.dumps(result, indent=2))
    return 0


def main(argv: list[str]) -> int:
    """Entry point of ``wardwatch alerting``."""
    if argv[:1] == ["registry-key"]:
        from wardwatch.alerting.registry.identity import IdentityKeyError, create_key_file

        args = _parser().parse_args(argv)
        try:
            create_key_file(args.path)
        except (IdentityKeyError, OSError) as exc:
            print(f"wardwatch alerting registry-key: {exc}", file=sys.stderr)
            return 1
        print(f'identity key written to {args.path} (mode 0600); set [registry] identity_key_file = "{args.path}"')
        return 0
    if argv[:1] == ["replay"]:
        from wardwatch.alerting.replay import replay_main  # the engine's command, loaded only when used

        return replay_main(argv[1:])
    if argv[:1] == ["score"]:
        from wardwatch.alerting.scoring import scoring_main

        return scoring_main(argv[1:])
    if argv[:1] == ["cinc2015"]:
        from wardwatch.alerting.cinc2015 import cinc2015_main

        return cinc2015_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.command == "bench":
            return _bench(args)
        if args.command in (None, "run"):
            return _run(_config_path(getattr(args, "run_config", None) or args.config))
        config_file = _config_path(getattr(args, "sub_config", None) or args.config)
        if args.command == "user":
            return _users(args, config_file)
        if args.command == "token":
            return _tokens(args, config_file)
        if args.command == "audit":
            return _audit(config_file)
    except WardwatchError as exc:
        print(f"wardwatch alerting: {exc}", file=sys.stderr)
        return 1
    _parser().print_usage(sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
