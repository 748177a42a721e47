"""The append-only, hash-chained audit log of clinician actions, alarm changes and pages sent.

Every entry carries ``hash = sha256(prev_hash + canonical JSON of the entry)``, so editing or
removing a row (which the database's triggers also refuse) breaks the chain at that row:
:func:`verify_chain` finds it. The chain alone is not proof against someone who can write the
database: they can re-hash it from an edited row, or cut its tail. :class:`AuditAnchor` closes that
with a key kept outside the database (a MAC on every row) and a signed head checkpoint file.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec

from wardwatch.core.errors import WardwatchError

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


# -- the anchor outside the database ------------------------------------------------------------

KEY_ENV: Final = "WW_ALERTING_AUDIT_KEY"
"""Environment variable holding the audit key (hex, at least 32 bytes) instead of a key file.

Not ``WARDWATCH_*``: those are configuration overrides of every service."""

_KEY_BYTES: Final = 32


class AuditAnchorError(WardwatchError):
    """The audit key or head checkpoint cannot be read or created (the message says how to fix it)."""


class AuditBreak(msgspec.Struct, frozen=True, kw_only=True):
    """A discontinuity found when appending: the entry at the last checkpoint had gone or changed."""

    seq: int
    problem: str


class AuditHead(msgspec.Struct, frozen=True, kw_only=True):
    """The signed checkpoint of the chain's head, written outside the database at every append.

    ``first_keyed_seq``: entries from this sequence number on carry a MAC (older ones predate the key).
    ``breaks``: every discontinuity ever found; carried forward (and signed) so that appending after
    a truncation cannot hide it.
    """

    seq: int
    hash: str
    first_keyed_seq: int
    breaks: tuple[AuditBreak, ...] = ()
    mac: str = ""


_head_decoder: Final = msgspec.json.Decoder(AuditHead)


class AuditAnchor:
    """An HMAC key kept outside the database, and the signed head checkpoint file.

    Each audit row gets ``mac = HMAC-SHA256(key, hash)``: whoever can write the database but not read
    the key cannot re-hash an edited chain (its MACs no longer match). The head checkpoint (sequence
    number and hash of the newest entry, MAC'd) lives in a file beside the key: deleting the chain's
    tail leaves the checkpoint pointing past the end. Limits: someone holding the key can forge both;
    someone who can replace the checkpoint with an older one of their own copy can hide a truncation
    back to that point (ship the checkpoint file off the machine to close that).
    """

    def __init__(self, key: bytes, head_file: Path) -> None:
        if len(key) < _KEY_BYTES:
            raise AuditAnchorError(f"the audit key must be at least {_KEY_BYTES} bytes (64 hex digits)")
        self._key = key
        self.head_file = head_file

    @classmethod
    def load(cls, key_file: Path, head_file: Path, *, environ: Mapping[str, str] | None = None) -> AuditAnchor:
        """The key from ``$WW_ALERTING_AUDIT_KEY`` (hex) or ``key_file`` (created, mode 0600, when missing)."""
        env = os.environ if environ is None else environ
        from_env = env.get(KEY_ENV)
        if from_env:
            try:
                return cls(bytes.fromhex(from_env.strip()), head_file)
            except ValueError:
                raise AuditAnchorError(f"{KEY_ENV} must be hex digits (e.g. from `openssl rand -hex 32`)") from None
        return cls(_read_or_create_key(key_file), head_file)

    def mac(self, chain_hash_hex: str) -> str:
        """The MAC of one row's chain hash."""
        return hmac.new(self._key, chain_hash_hex.encode("ascii"), hashlib.sha256).hexdigest()

    def _head_mac(self, head: AuditHead) -> str:
        message = b"head:" + msgspec.json.encode(msgspec.structs.replace(head, mac=""))
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def read_head(self) -> AuditHead | None:
        """The checkpoint, or ``None`` if there is none yet. Raises :class:`AuditAnchorError` if unreadable."""
        try:
            raw = self.head_file.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditAnchorError(f"cannot read the audit head checkpoint {self.head_file}: {exc}") from None
        try:
            return _head_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise AuditAnchorError(f"audit head checkpoint {self.head_file} is corrupt: {exc}") from None

    def head_is_genuine(self, head: AuditHead) -> bool:
        """Whether the checkpoint carries a valid MAC."""
        return hmac.compare_digest(head.mac, self._head_mac(head))

    def write_head(self, seq: int, hash_hex: str, first_keyed_seq: int, breaks: tuple[AuditBreak, ...] = ()) -> None:
        """Replace the checkpoint atomically (write a temporary file, then rename)."""
        head = AuditHead(seq=seq, hash=hash_hex, first_keyed_seq=first_keyed_seq, breaks=breaks)
        head = msgspec.structs.replace(head, mac=self._head_mac(head))
        tmp = self.head_file.with_name(f"{self.head_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, msgspec.json.encode(head))
        finally:
            os.close(fd)
        os.replace(tmp, self.head_file)

    def advance_head(self, seq: int, hash_hex: str, first_keyed_seq: int, breaks: tuple[AuditBreak, ...]) -> None:
        """Write the checkpoint unless another writer already wrote a newer one (under a file lock).

        Breaks already recorded in the file are kept: a break, once found, stays in every later checkpoint.
        """
        lock = self.head_file.with_name(self.head_file.name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = self.read_head()
            if current is not None and self.head_is_genuine(current):
                if current.seq >= seq:
                    merged = (*current.breaks, *(b for b in breaks if b not in current.breaks))
                    if merged != current.breaks:
                        self.write_head(current.seq, current.hash, current.first_keyed_seq, merged)
                    return
                breaks = (*current.breaks, *(b for b in breaks if b not in current.breaks))
            self.write_head(seq, hash_hex, first_keyed_seq, breaks)
        finally:
            os.close(fd)  # releases the lock


def _read_or_create_key(key_file: Path) -> bytes:
    try:
        mode = key_file.stat().st_mode
    except FileNotFoundError:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile
            return _read_or_create_key(key_file)
        except OSError as exc:
            raise AuditAnchorError(f"cannot create the audit key {key_file}: {exc}") from None
        try:
            os.write(fd, secrets.token_hex(_KEY_BYTES).encode("ascii") + b"\n")
        finally:
            os.close(fd)
        return _read_or_create_key(key_file)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuditAnchorError(f"the audit key {key_file} is readable by others: run `chmod 600 {key_file}`")
    text = key_file.read_text(encoding="ascii").strip()
    if not text:  # created by another process that has not written it yet
        time.sleep(0.01)
        text = key_file.read_text(encoding="ascii").strip()
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise AuditAnchorError(f"the audit key {key_file} must hold hex digits (`openssl rand -hex 32`)") from None
