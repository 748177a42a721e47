"""The one exception hierarchy of wardwatch.

Third-party errors are translated into these at the boundary of each part, so callers catch
``WardwatchError`` (or a subclass) and nothing else. Every error carries the data needed to say
what was wrong and what to do.
"""

from __future__ import annotations


class WardwatchError(Exception):
    """Base class of every error wardwatch raises on purpose."""


class GattDecodeError(WardwatchError, ValueError):
    """Bytes from (or for) a GATT characteristic are malformed.

    Raised by every decoder in :mod:`wardwatch.core.gatt` for truncated input, trailing bytes,
    reserved flag bits, and values that are impossible for the characteristic. Nothing else
    escapes a decoder.
    """

    def __init__(self, characteristic: str, problem: str, data: bytes | None = None) -> None:
        self.characteristic = characteristic
        self.problem = problem
        self.data = data
        shown = f" (bytes: {data.hex()})" if data is not None else ""
        super().__init__(f"{characteristic}: {problem}{shown}")


class GattEncodeError(WardwatchError, ValueError):
    """A value cannot be represented in a GATT characteristic's format (e.g. out of range)."""


class SchemaError(WardwatchError, ValueError):
    """A wire message (MQTT payload) does not match the wardwatch schema."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class TopicError(WardwatchError, ValueError):
    """An MQTT topic or an identifier in it is not valid under the wardwatch topic scheme."""


class ConfigError(WardwatchError):
    """Configuration is missing or invalid; the message names the key and how to fix it."""

    def __init__(self, problem: str, *, key: str | None = None, source: str | None = None) -> None:
        self.problem = problem
        self.key = key
        self.source = source
        where = f" [{source}]" if source else ""
        at = f" at `{key}`" if key else ""
        super().__init__(f"invalid configuration{where}{at}: {problem}")


class MissingExtraError(WardwatchError):
    """A subcommand needs an optional dependency group that is not installed."""

    def __init__(self, command: str, extra: str, missing_module: str) -> None:
        self.command = command
        self.extra = extra
        self.missing_module = missing_module
        super().__init__(
            f"`wardwatch {command}` needs the '{extra}' extra (missing: {missing_module}); "
            f"install it with: pip install 'wardwatch[{extra}]'"
        )


class ServerStartError(WardwatchError):
    """A local server (mosquitto, influxd) or its TLS material could not be made ready.

    The message says what failed and what to do; ``log_tail`` holds the last lines the server
    wrote, when there are any.
    """

    def __init__(self, server: str, problem: str, *, log_tail: str = "") -> None:
        self.server = server
        self.problem = problem
        self.log_tail = log_tail
        shown = f"\n--- last lines of the {server} log ---\n{log_tail}" if log_tail else ""
        super().__init__(f"{server}: {problem}{shown}")


class WaitTimeoutError(WardwatchError, TimeoutError):
    """A condition awaited with :func:`wardwatch.core.waiting.wait_for` did not hold in time."""
