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

from wardwatch.alerting.errors import AlertingError

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
_HEAD_BYTES: Final = 4096  # the checkpoint is one page, rewritten in place
_MAX_BREAKS: Final = 8  # the first breaks found are kept (they say where the tampering began)


class AuditAnchorError(AlertingError):
    """The audit key or head checkpoint cannot be read or created (the message says how to fix it)."""


class AuditBreak(msgspec.Struct, frozen=True, kw_only=True):
    """A discontinuity found when appending: the entry at the last checkpoint had gone or changed."""

    seq: int
    problem: str


class AuditHead(msgspec.Struct, frozen=True, kw_only=True):
    """The signed checkpoint of the chain's head, written outside the database at every append.

    ``first_keyed_seq``: entries from this sequence number on carry a MAC (older ones predate the key).
    ``breaks``: the discontinuities found (the first eight); carried forward (and signed) so that
    appending after a truncation cannot hide it.
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
    number and hash of the newest entry, MAC'd) lives in a file of its own, one page rewritten in
    place under ``flock`` after every append: deleting the chain's tail leaves the checkpoint pointing
    past the end. Limits: someone holding the key can forge both; someone who can replace the
    checkpoint with an older one of their own copy can hide a truncation back to that point (ship the
    checkpoint file off the machine to close that).
    """

    def __init__(self, key: bytes, head_file: Path) -> None:
        if len(key) < _KEY_BYTES:
            raise AuditAnchorError(f"the audit key must be at least {_KEY_BYTES} bytes (64 hex digits)")
        self._key = key
        self.head_file = head_file
        self._fd: int | None = None
        self._inode = 0

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

    def _file(self) -> int:
        """The checkpoint file, opened once (reopened if it was removed or replaced meanwhile)."""
        fd = self._fd
        if fd is not None:
            try:
                if os.stat(self.head_file).st_ino == self._inode:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)
            self._fd = None
        try:
            fd = os.open(self.head_file, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditAnchorError(f"cannot open the audit head checkpoint {self.head_file}: {exc}") from None
        self._fd, self._inode = fd, os.fstat(fd).st_ino
        return fd

    def close(self) -> None:
        """Close the checkpoint file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _read(self, fd: int) -> AuditHead | None:
        raw = os.pread(fd, _HEAD_BYTES, 0).strip()
        if not raw:
            return None
        try:
            return _head_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            raise AuditAnchorError(f"audit head checkpoint {self.head_file} is corrupt: {exc}") from None

    def _write(self, fd: int, head: AuditHead) -> None:
        head = msgspec.structs.replace(head, breaks=head.breaks[:_MAX_BREAKS], mac="")
        data = msgspec.json.encode(msgspec.structs.replace(head, mac=self._head_mac(head)))
        os.pwrite(fd, data.ljust(_HEAD_BYTES), 0)  # one page, in place: never half old, half new

    def read_head(self) -> AuditHead | None:
        """The checkpoint, or ``None`` if there is none yet. Raises :class:`AuditAnchorError` if unreadable."""
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_SH)
        try:
            return self._read(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def head_is_genuine(self, head: AuditHead) -> bool:
        """Whether the checkpoint carries a valid MAC."""
        return hmac.compare_digest(head.mac, self._head_mac(head))

    def write_head(self, seq: int, hash_hex: str, first_keyed_seq: int, breaks: tuple[AuditBreak, ...] = ()) -> None:
        """Replace the checkpoint (whatever it holds)."""
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            self._write(fd, AuditHead(seq=seq, hash=hash_hex, first_keyed_seq=first_keyed_seq, breaks=breaks))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def advance_head(self, seq: int, hash_hex: str, first_keyed_seq: int, breaks: tuple[AuditBreak, ...]) -> None:
        """Write the checkpoint unless another writer already wrote a newer one (under a file lock).

        Breaks already recorded in the file are kept: a break, once found, stays in every later
        checkpoint. A checkpoint not signed with the key (someone replaced the file) is a break too.
        """
        fd = self._file()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            try:
                current = self._read(fd)
            except AuditAnchorError:
                current = None
                breaks = (*breaks, AuditBreak(seq=seq, problem="the head checkpoint file had been corrupted"))
            if current is not None and not self.head_is_genuine(current):
                problem = "the head checkpoint had been replaced by one not signed with the audit key"
                breaks, current = (*breaks, AuditBreak(seq=seq, problem=problem)), None
            if current is not None:
                merged = (*current.breaks, *(b for b in breaks if b not in current.breaks))
                if current.seq >= seq:  # a newer one is there already: keep it, with every break
                    if merged != current.breaks:
                        self._write(fd, msgspec.structs.replace(current, breaks=merged))
                    return
                breaks = merged
            head = AuditHead(seq=seq, hash=hash_hex, first_keyed_seq=first_keyed_seq, breaks=breaks)
            self._write(fd, head)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


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
