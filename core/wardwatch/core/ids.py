"""Pseudonymous identifiers for patients, devices, gateways and wards.

Identifiers travel in MQTT topics, database tags, logs and metrics, so they must never carry a
name, a hospital number or any other PHI. They are short lowercase tokens; :func:`pseudonym`
derives one from a real identifier with a keyed hash (the key stays with the enrolling site).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Annotated, Final

import msgspec

from wardwatch.core.errors import TopicError

ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
"""Allowed identifier shape: lowercase letters, digits, ``_ . -``; 1-64 characters; topic-safe.

This is the JSON Schema (ECMA-262) form for API documents, where ``$`` ends the string. In Python ``$``
also matches before a final newline (``"p-1\\n"`` passed), so Python code checks with
:func:`is_identifier` and the wire schema with ``\\Z``."""

_ID_RE: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")

Identifier = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}\Z")]
"""An identifier as a msgspec-validated type, for use in schema and config structs."""


def is_identifier(value: str) -> bool:
    """Whether ``value`` is a valid identifier (the whole string; no final newline)."""
    return _ID_RE.fullmatch(value) is not None


def check_id(value: str, what: str = "identifier") -> str:
    """Return ``value`` if it is a valid identifier, else raise :class:`TopicError` saying why."""
    if not is_identifier(value):
        raise TopicError(
            f"{what} {value!r} is not a valid wardwatch identifier: use 1-64 characters of "
            "lowercase letters, digits, '_', '.', '-', starting with a letter or digit "
            "(and never a name or hospital number: see wardwatch.core.ids.pseudonym)"
        )
    return value


def pseudonym(key: bytes, real_identifier: str, prefix: str = "p") -> str:
    """Derive a stable pseudonymous id (e.g. ``p-k3v9q2m7x4``) from a real identifier.

    The mapping is a keyed HMAC-SHA256: without ``key`` the real identifier cannot be recovered
    or confirmed by guessing. Keep the key with the site that enrols patients.
    """
    if len(key) < 16:
        raise ValueError("pseudonym key must be at least 16 bytes of secret randomness")
    digest = hmac.new(key, real_identifier.encode("utf-8"), hashlib.sha256).digest()
    token = base64.b32encode(digest[:10]).decode("ascii").lower()
    return check_id(f"{prefix}-{token}", "pseudonym prefix")
