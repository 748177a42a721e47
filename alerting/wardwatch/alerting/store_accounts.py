"""Users and tokens in the alerting store (passwords as argon2 hashes, tokens by their SHA-256 only)."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

from wardwatch.alerting.errors import StoreError


@dataclass(frozen=True, slots=True)
class UserRow:
    """A person's account (password stored as an argon2 hash)."""

    name: str
    role: str
    password_hash: str
    created: int
    disabled: bool


@dataclass(frozen=True, slots=True)
class TokenRow:
    """A session or machine token, stored by its SHA-256 hash only."""

    token_hash: str
    name: str
    role: str
    kind: str
    created: int
    expires: int | None
    hard_expires: int | None


class _AccountTables:
    """The users and tokens of :class:`~wardwatch.alerting.store.Store` (its base)."""

    _db: sqlite3.Connection
    _lock: threading.RLock

    def add_user(self, name: str, role: str, password_hash: str, t: int) -> None:
        """Create a user; raise :class:`StoreError` if the name is taken."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO users (name, role, password_hash, created) VALUES (?, ?, ?, ?)",
                    (name, role, password_hash, t),
                )
            except sqlite3.IntegrityError:
                raise StoreError(f"user {name!r} exists already") from None

    def set_user(
        self, name: str, *, role: str | None = None, password_hash: str | None = None, disabled: bool | None = None
    ) -> bool:
        """Change a user's role, password or disabled flag; False if there is no such user."""
        with self._lock:
            cursor = self._db.execute(
                "UPDATE users SET role = COALESCE(?, role), password_hash = COALESCE(?, password_hash),"
                " disabled = COALESCE(?, disabled) WHERE name = ?",
                (role, password_hash, None if disabled is None else int(disabled), name),
            )
            if disabled:
                self._db.execute("DELETE FROM tokens WHERE name = ? AND kind = 'session'", (name,))
            return bool(cursor.rowcount)

    def user(self, name: str) -> UserRow | None:
        """A user by name."""
        row = self._db.execute(
            "SELECT name, role, password_hash, created, disabled FROM users WHERE name = ?", (name,)
        ).fetchone()
        return UserRow(row[0], row[1], row[2], row[3], bool(row[4])) if row else None

    def users(self) -> list[UserRow]:
        """All users."""
        rows = self._db.execute("SELECT name, role, password_hash, created, disabled FROM users ORDER BY name")
        return [UserRow(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows.fetchall()]

    def add_token(self, token: TokenRow) -> None:
        """Store a token (by hash)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO tokens (token_hash, name, role, kind, created, expires, hard_expires)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    token.token_hash,
                    token.name,
                    token.role,
                    token.kind,
                    token.created,
                    token.expires,
                    token.hard_expires,
                ),
            )

    def token(self, token_hash: str) -> TokenRow | None:
        """A token by its hash."""
        row = self._db.execute(
            "SELECT token_hash, name, role, kind, created, expires, hard_expires FROM tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
        return TokenRow(*row) if row else None

    def extend_token(self, token_hash: str, expires: int) -> None:
        """Slide a session's idle expiry."""
        with self._lock:
            self._db.execute("UPDATE tokens SET expires = ? WHERE token_hash = ?", (expires, token_hash))

    def delete_token(self, token_hash: str) -> None:
        """Revoke a token."""
        with self._lock:
            self._db.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))

    def delete_tokens(self, name: str, kind: str) -> int:
        """Revoke every token of ``kind`` belonging to ``name`` (e.g. break-glass at logout); return how many."""
        with self._lock:
            return self._db.execute("DELETE FROM tokens WHERE name = ? AND kind = ?", (name, kind)).rowcount

    def purge_expired_tokens(self, now: int) -> int:
        """Delete expired tokens; return how many."""
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM tokens WHERE (expires IS NOT NULL AND expires <= ?)"
                " OR (hard_expires IS NOT NULL AND hard_expires <= ?)",
                (now, now),
            )
            return cursor.rowcount
