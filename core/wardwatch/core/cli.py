"""The ``wardwatch`` command: one entry point, subcommands provided by the installed parts.

Parts register ``main(argv) -> int`` functions in the ``wardwatch.commands`` entry-point group, so
the core never imports a part. ``wardwatch bench PART`` runs ``PART``'s ``bench`` subcommand. A
subcommand whose optional dependencies are missing says which extra to install and exits 3.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, distribution, entry_points, version
from typing import Final

from wardwatch.core.errors import MissingExtraError, WardwatchError

COMMAND_GROUP: Final = "wardwatch.commands"
EXIT_MISSING_EXTRA: Final = 3

# Which optional extra each subcommand needs (the core cannot ask the part: it may not import).
EXTRA_OF_COMMAND: Final[dict[str, str]] = {
    "gateway": "gateway",
    "ingest": "ingest",
    "alerting": "alerting",
    "sim": "sim",
    "fhir": "fhir",
    "console": "console",
    "up": "all",
}

CommandMain = Callable[[list[str]], int]


class UnknownCommandError(WardwatchError):
    """No installed part provides the subcommand."""


def _commands() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=COMMAND_GROUP)}


def _usage() -> str:
    names = ["gatt", "broker", *sorted(_commands()), "bench"]
    return (
        "usage: wardwatch COMMAND [ARGS...]\n\n"
        f"commands: {', '.join(dict.fromkeys(names))}\n"
        "  wardwatch gatt decode UUID HEX    decode a GATT characteristic value to JSON\n"
        "  wardwatch broker init DIR ...     write a site's MQTT credentials, ACL and TLS files\n"
        "  wardwatch bench PART              run PART's benchmark (prints JSON)\n"
        "  wardwatch COMMAND --help          help for one command\n"
    )


def _load(name: str) -> CommandMain:
    matches = [ep for ep in entry_points(group=COMMAND_GROUP) if ep.name == name]
    if not matches:
        raise UnknownCommandError(name)
    loaded: CommandMain = matches[0].load()
    return loaded


_REQUIREMENT_RE: Final = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(?:\[(?P<extras>[^\]]*)\])?[^;]*(?:;(?P<marker>.*))?$")
_EXTRA_MARKER_RE: Final = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def missing_distributions(extra: str, _seen: frozenset[str] = frozenset()) -> list[str]:
    """Distributions that the ``wardwatch[extra]`` install needs but are not installed (read from metadata)."""
    try:
        requirements = distribution("wardwatch").requires or []
    except PackageNotFoundError:
        return []  # running from a source tree without metadata: let the import tell
    missing: list[str] = []
    for requirement in requirements:
        match = _REQUIREMENT_RE.match(requirement.strip())
        if match is None or match.group("marker") is None:
            continue
        marker_extra = _EXTRA_MARKER_RE.search(match.group("marker"))
        if marker_extra is None or marker_extra.group(1) != extra:
            continue
        name = match.group("name")
        if name == "wardwatch":
            for nested in (match.group("extras") or "").split(","):
                nested = nested.strip()
                if nested and nested not in _seen:
                    missing += missing_distributions(nested, _seen | {extra})
            continue
        try:
            distribution(name)
        except PackageNotFoundError:
            missing.append(name)
    return missing


def _is_missing_dependency(exc: ModuleNotFoundError) -> bool:
    return exc.name is not None and exc.name.split(".")[0] != "wardwatch"


def run_command(name: str, argv: list[str]) -> int:
    """Load subcommand ``name`` and run it; translate a missing optional dependency into advice."""
    extra = EXTRA_OF_COMMAND.get(name)
    if extra is not None:
        missing = missing_distributions(extra)
        if missing:
            error = MissingExtraError(name, extra, ", ".join(missing))
            print(f"wardwatch: {error}", file=sys.stderr)
            return EXIT_MISSING_EXTRA
    try:
        command = _load(name)
        return command(argv)
    except ModuleNotFoundError as exc:
        if not _is_missing_dependency(exc):
            raise
        error = MissingExtraError(name, EXTRA_OF_COMMAND.get(name, "all"), str(exc.name))
        print(f"wardwatch: {error}", file=sys.stderr)
        return EXIT_MISSING_EXTRA


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wardwatch`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(_usage(), end="")
        return 0 if args else 2
    if args[0] == "--version":
        print(f"wardwatch {version('wardwatch')}")
        return 0
    name, rest = args[0], args[1:]
    try:
        if name == "gatt":
            from wardwatch.core.gatt.cli import gatt_main

            return gatt_main(rest)
        if name == "broker":
            from wardwatch.core.broker import broker_main

            return broker_main(rest)
        if name == "bench":
            if not rest or rest[0].startswith("-"):
                wants_help = bool(rest) and rest[0] in {"-h", "--help"}
                print(
                    "usage: wardwatch bench PART [ARGS...]   (PART: ingest, alerting, gateway, sim, fhir, console)",
                    file=sys.stdout if wants_help else sys.stderr,
                )
                return 0 if wants_help else 2
            return run_command(rest[0], ["bench", *rest[1:]])
        return run_command(name, rest)
    except UnknownCommandError as exc:
        print(f"wardwatch: unknown command {exc.args[0]!r}\n\n{_usage()}", file=sys.stderr, end="")
        return 2
    except WardwatchError as exc:
        print(f"wardwatch {name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
