"""Patient identity encrypted at rest: AES-256-GCM with a key kept in a file outside the database.

The identity (name, date of birth, hospital number, phone, address) is what nurses need to
recognise a patient; nothing else in wardwatch carries it. It is stored as one AES-GCM ciphertext
per patient, bound to the patient's issued id as associated data (a row copied onto another patient
does not decrypt). The key file holds 32 random bytes, mode 0600, created by
``wardwatch alerting registry-key PATH`` (:func:`create_key_file`). A missing, unreadable or wrong
key is an :class:`IdentityKeyError` saying what to do; nothing is ever stored or returned in plaintext.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import Annotated, Final

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wardwatch.alerting.errors import AlertingError

KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_VERSION: Final = b"\x01"

Text = Annotated[
    str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\u0000-\u001f\u007f\u202a-\u202e\u2066-\u2069]*$")
]


class Identity(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    """What identifies a patient to the people caring for them (never leaves the registry unencrypted)."""

    name: Text
    date_of_birth: Annotated[str, msgspec.Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    hospital_number: Text | None = None
    phone: Text | None = None
    address: Annotated[str, msgspec.Meta(min_length=1, max_length=500)] | None = None


class IdentityKeyError(AlertingError):
    """The identity key is missing, unreadable or not the key the identities were encrypted with."""


def create_key_file(path: Path) -> None:
    """Write a new random key to ``path`` with mode 0600; refuses to overwrite an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityKeyError(
            f"{path} exists already; a new key would make every stored identity unreadable. Keep it"
        ) from None
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(KEY_BYTES))


class IdentityCipher:
    """Encrypts and decrypts :class:`Identity` records with the key in ``key_file``."""

    def __init__(self, key_file: Path) -> None:
        self.key_file = key_file
        try:
            info = key_file.stat()
            key = key_file.read_bytes()
        except FileNotFoundError:
            raise IdentityKeyError(
                f"identity key file {key_file} does not exist; create it with "
                f"`wardwatch alerting registry-key {key_file}` (and keep a backup apart from the database)"
            ) from None
        except OSError as exc:
            raise IdentityKeyError(f"cannot read identity key file {key_file}: {exc}") from None
        if len(key) != KEY_BYTES:
            raise IdentityKeyError(
                f"identity key file {key_file} holds {len(key)} bytes, not {KEY_BYTES}: not a wardwatch identity key"
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            raise IdentityKeyError(f"identity key file {key_file} is readable by others; chmod 600 {key_file}")
        self._aead = AESGCM(key)

    def encrypt(self, patient: str, identity: Identity) -> bytes:
        """The ciphertext of ``identity``, bound to ``patient``."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, msgspec.json.encode(identity), patient.encode())

    def decrypt(self, patient: str, blob: bytes) -> Identity:
        """The identity of ``patient``; :class:`IdentityKeyError` if this key did not encrypt it."""
        if blob[:1] != _VERSION:
            raise IdentityKeyError(f"identity of {patient} is in an unknown format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            plain = self._aead.decrypt(nonce, sealed, patient.encode())
        except InvalidTag:
            raise IdentityKeyError(
                f"the identity of {patient} does not decrypt with {self.key_file}: wrong key file"
            ) from None
        return msgspec.json.decode(plain, type=Identity)
