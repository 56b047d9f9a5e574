"""Console accounts: users with roles, argon2id password hashes, server-side sessions, login rate limits.

Roles, each including the one before: ``viewer`` (read and export), ``operator`` (also reviews results),
``admin`` (also manages users). Session cookies carry a random token; the database keeps only its
SHA-256, so a leaked database does not leak live sessions.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from device.errors import SonopiError
from hub.web.db import WebDb

log = logging.getLogger(__name__)

ROLES = ("viewer", "operator", "admin")
_USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.@-]{1,63}$")
MIN_PASSWORD_LENGTH = 10


class AccountError(SonopiError):
    code = "account_error"


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str
    disabled: bool
    created_at: str
    updated_at: str

    def can(self, role: str) -> bool:
        """True if this user's role includes ``role``."""
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: str


@dataclass(frozen=True)
class RateLimit:
    """At most ``per_user`` failures for one username and ``per_ip`` from one address in ``window``."""

    per_user: int = 5
    per_ip: int = 20
    window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class SessionPolicy:
    absolute: timedelta = timedelta(hours=10)
    idle: timedelta = timedelta(hours=1)
    touch_every: timedelta = timedelta(minutes=1)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalise_username(name: str) -> str:
    username = name.strip().lower()
    if not _USERNAME_RE.match(username):
        raise AccountError(f"invalid username {name!r}: 2-64 characters of a-z 0-9 _ . @ -")
    return username


_USER_COLUMNS = "id, username, role, disabled, created_at, updated_at"


def _row_to_user(row: tuple) -> User:
    return User(id=int(row[0]), username=row[1], role=row[2], disabled=bool(row[3]), created_at=row[4],
                updated_at=row[5])


class Accounts:
    def __init__(self, db: WebDb, *, limits: RateLimit = RateLimit(), policy: SessionPolicy = SessionPolicy(),
                 hasher: PasswordHasher | None = None) -> None:
        self._db = db
        self.limits = limits
        self.policy = policy
        self._hasher = hasher or PasswordHasher()  # argon2id, library defaults (RFC 9106 low-memory profile)
        self._dummy_hash: str | None = None  # made on first use: verified for unknown users

    # --- users -----------------------------------------------------------------------------------

    def add_user(self, username: str, password: str, role: str) -> User:
        name = normalise_username(username)
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short (at least {MIN_PASSWORD_LENGTH} characters)")
        if self.user(name) is not None:
            raise AccountError(f"user {name!r} already exists")
        now = _iso(_now())
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO web_users (username, password_hash, role, disabled, created_at, updated_at) "
                "VALUES (?, ?, ?, 0, ?, ?)",
                (name, self._hasher.hash(password), role, now, now),
            )
        user = self.user(name)
        assert user is not None
        log.info("user %s added with role %s", name, role)
        return user

    def user(self, username: str) -> User | None:
        row = self._db.one(f"SELECT {_USER_COLUMNS} FROM web_users WHERE username = ?", (username.strip().lower(),))
        return _row_to_user(row) if row else None

    def users(self) -> list[User]:
        return [_row_to_user(r) for r in self._db.query(f"SELECT {_USER_COLUMNS} FROM web_users ORDER BY username")]

    def set_disabled(self, username: str, disabled: bool) -> User:
        user = self.user(username)
        if user is None:
            raise AccountError(f"no user {username!r}")
        with self._db.transaction() as tx:
            tx.execute("UPDATE web_users SET disabled = ?, updated_at = ? WHERE id = ?",
                       (int(disabled), _iso(_now()), user.id))
            if disabled:
                tx.execute("DELETE FROM web_sessions WHERE user_id = ?", (user.id,))
        log.info("user %s %s", user.username, "disabled" if disabled else "enabled")
        return self.user(username)  # type: ignore[return-value]

    def set_password(self, username: str, password: str) -> None:
        user = self.user(username)
        if user is None:
            raise AccountError(f"no user {username!r}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short (at least {MIN_PASSWORD_LENGTH} characters)")
        with self._db.transaction() as tx:
            tx.execute("UPDATE web_users SET password_hash = ?, updated_at = ? WHERE id = ?",
                       (self._hasher.hash(password), _iso(_now()), user.id))
            tx.execute("DELETE FROM web_sessions WHERE user_id = ?", (user.id,))

    # --- login -----------------------------------------------------------------------------------

    def is_rate_limited(self, username: str, client_ip: str, now: datetime | None = None) -> bool:
        since = _iso((now or _now()) - self.limits.window)
        name = username.strip().lower()[:64]
        by_user = self._db.one(
            "SELECT COUNT(*) FROM web_login_attempts WHERE username = ? AND at >= ? AND ok = 0", (name, since))
        by_ip = self._db.one(
            "SELECT COUNT(*) FROM web_login_attempts WHERE client_ip = ? AND at >= ? AND ok = 0", (client_ip, since))
        return int(by_user[0]) >= self.limits.per_user or int(by_ip[0]) >= self.limits.per_ip  # type: ignore[index]

    def authenticate(self, username: str, password: str, client_ip: str) -> User | None:
        """The user if the password matches an enabled account; records the attempt either way.

        Callers check :meth:`is_rate_limited` first. Unknown users cost one hash too (no timing oracle)."""
        name = username.strip().lower()[:64]
        row = self._db.one("SELECT id, password_hash, disabled FROM web_users WHERE username = ?", (name,))
        ok = False
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
            self._verify(self._dummy_hash, password)
        elif self._verify(row[1], password) and not row[2]:
            ok = True
            if self._hasher.check_needs_rehash(row[1]):
                self.set_password(name, password)
        now = _iso(_now())
        with self._db.transaction() as tx:
            tx.execute("INSERT INTO web_login_attempts (username, client_ip, at, ok) VALUES (?, ?, ?, ?)",
                       (name, client_ip, now, int(ok)))
            tx.execute("DELETE FROM web_login_attempts WHERE at < ?", (_iso(_now() - 4 * self.limits.window),))
        return self.user(name) if ok else None

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # --- sessions --------------------------------------------------------------------------------

    def create_session(self, user: User) -> tuple[str, Session]:
        """A new session; returns the cookie token (only its hash is stored) and the session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = _now()
        expires = _iso(now + self.policy.absolute)
        with self._db.transaction() as tx:
            tx.execute(
                "INSERT INTO web_sessions (token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_hash(token), user.id, csrf, _iso(now), _iso(now), expires),
            )
            tx.execute("DELETE FROM web_sessions WHERE expires_at < ?", (_iso(now),))
        return token, Session(user=user, csrf_token=csrf, expires_at=expires)

    def session(self, token: str | None) -> Session | None:
        """The live session for a cookie token, or None (unknown, expired, idle too long, user disabled)."""
        if not token:
            return None
        row = self._db.one(
            f"SELECT s.csrf_token, s.last_seen_at, s.expires_at, "
            f"{', '.join('u.' + c.strip() for c in _USER_COLUMNS.split(','))} "
            "FROM web_sessions s JOIN web_users u ON u.id = s.user_id WHERE s.token_hash = ?",
            (token_hash(token),),
        )
        if row is None:
            return None
        csrf, last_seen, expires = row[0], _parse(row[1]), row[2]
        user = _row_to_user(row[3:])
        now = _now()
        if user.disabled or _parse(expires) <= now or now - last_seen > self.policy.idle:
            self.end_session(token)
            return None
        if now - last_seen > self.policy.touch_every:
            with self._db.transaction() as tx:
                tx.execute("UPDATE web_sessions SET last_seen_at = ? WHERE token_hash = ?", (_iso(now), token_hash(token)))
        return Session(user=user, csrf_token=csrf, expires_at=expires)

    def end_session(self, token: str) -> None:
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM web_sessions WHERE token_hash = ?", (token_hash(token),))
