"""The append-only, hash-chained audit log of clinician actions, alarm changes and pages sent.

Every entry carries ``hash = sha256(prev_hash + canonical JSON of the entry)``, so editing or
removing a row (which the database's triggers also refuse) breaks the chain at that row:
:func:`verify_chain` finds it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, Final

import msgspec

GENESIS: Final = "0" * 64

SYSTEM_ACTOR: Final = "system"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One audit record. ``seq``/``prev_hash``/``hash`` are set when it is appended."""

    t: int  # ms since the epoch
    actor: str  # user or machine-token name, or "system"
    action: str  # e.g. "acknowledge", "silence", "resolve", "thresholds_set", "page_delivered", "login"
    alarm_id: str | None = None
    patient: str | None = None
    ward: str | None = None
    reason: str = ""
    details: dict[str, Any] = {}
    seq: int = 0
    prev_hash: str = ""
    hash: str = ""


_encoder: Final = msgspec.json.Encoder(order="sorted")


def content_bytes(entry: AuditEntry, seq: int) -> bytes:
    """Canonical bytes of an entry's content (everything but the hashes), with its sequence number."""
    content = {
        "seq": seq,
        "t": entry.t,
        "actor": entry.actor,
        "action": entry.action,
        "alarm_id": entry.alarm_id,
        "patient": entry.patient,
        "ward": entry.ward,
        "reason": entry.reason,
        "details": entry.details,
    }
    return _encoder.encode(content)


def chain_hash(prev_hash: str, entry: AuditEntry, seq: int) -> str:
    """The hash an entry with ``seq`` gets after ``prev_hash``."""
    return hashlib.sha256(prev_hash.encode("ascii") + content_bytes(entry, seq)).hexdigest()


def sealed(entry: AuditEntry, seq: int, prev_hash: str) -> AuditEntry:
    """``entry`` with its sequence number and chain hashes filled in."""
    return msgspec.structs.replace(entry, seq=seq, prev_hash=prev_hash, hash=chain_hash(prev_hash, entry, seq))


def verify_chain(entries: Iterable[AuditEntry], start_hash: str = GENESIS) -> int | None:
    """Sequence number of the first entry that breaks the chain, or ``None`` if it is intact."""
    prev = start_hash
    for entry in entries:
        if entry.prev_hash != prev or entry.hash != chain_hash(prev, entry, entry.seq):
            return entry.seq
        prev = entry.hash
    return None
