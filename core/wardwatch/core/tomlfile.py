"""Writing TOML config files: one writer for the stack, the test helpers and the server harness.

``tomli-w`` (the writer that pairs with the standard library's ``tomllib``) does the format; this module
maps wardwatch's values onto it: paths become strings, :class:`~wardwatch.core.config.Secret` values are
revealed (a config file is where a secret goes; the file is written mode 0600), and ``None`` is left out
(TOML has no null: an absent key means the default).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from wardwatch.core.config import Secret

__all__ = ["toml_text", "toml_value", "write_toml"]


def _plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return value.reveal()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items() if item is not None}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def toml_text(data: Mapping[str, Any]) -> str:
    """``data`` as the text of a TOML file (nested mappings as tables)."""
    return tomli_w.dumps(_plain(data))


def toml_value(value: Any) -> str:
    """One value as TOML (e.g. a quoted, escaped string), for config templates."""
    return tomli_w.dumps({"v": _plain(value)}).removeprefix("v = ").rstrip("\n")


def write_toml(path: Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` to ``path`` as TOML, mode 0600 from the start (config files hold secrets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(toml_text(data))
    path.chmod(0o600)  # an existing file keeps its mode through O_CREAT
    return path
