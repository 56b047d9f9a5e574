"""Console accounts: users with roles, argon2id password hashes, server-side sessions, sign-in within limits.

Roles, each including the one before: ``viewer`` (read and export), ``operator`` (also reviews results),
``admin`` (also manages users). Session cookies carry a random token; the database keeps only its
SHA-256, so a leaked database does not leak live sessions.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from device.errors import SonopiError
from hub.web.db import WebDb
from hub.web.limits import LoginLimiter, LoginLimits, Refusal, Reservation, TrustedBrowsers, cookie_value, token_hash
from hub.web.limits import iso as _iso

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


class LoginOutcome(Enum):
    OK = "ok"
    WRONG = "wrong"  # wrong password, unknown or disabled account (told apart nowhere)
    LIMITED = "limited"  # refused before the password was checked


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    user: User | None = None
    retry_after_s: int = 0  # LIMITED: when a slot frees up
    trusted_cookie: str | None = None  # OK: the browser's new trusted-browser cookie value


@dataclass(frozen=True)
class SessionPolicy:
    absolute: timedelta = timedelta(hours=10)
    idle: timedelta = timedelta(hours=1)
    touch_every: timedelta = timedelta(minutes=1)


def _now() -> datetime:
    return datetime.now(UTC)


def _parse(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def normalise_username(name: str) -> str:
    username = name.strip().lower()
    if not _USERNAME_RE.match(username):
        raise AccountError(f"invalid username {name!r}: 2-64 characters of a-z 0-9 _ . @ -")
    return username


_USER_COLUMNS = "id, username, role, disabled, created_at, updated_at"


def _row_to_user(row: tuple) -> User:
    return User(id=int(row[0]), username=row[1], role=row[2], disabled=bool(row[3]), created_at=row[4], updated_at=row[5])


class Accounts:
    def __init__(
        self,
        db: WebDb,
        *,
        limits: LoginLimits = LoginLimits(),  # noqa: B008  (frozen: one shared immutable default is safe)
        policy: SessionPolicy = SessionPolicy(),
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._db = db
        self.limits = limits
        self._limiter = LoginLimiter(db, limits)
        self._trusted = TrustedBrowsers(db, limits)
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
                "INSERT INTO web_users (username, password_hash, role, disabled, created_at, updated_at) VALUES (?, ?, ?, 0, ?, ?)",
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
            tx.execute("UPDATE web_users SET disabled = ?, updated_at = ? WHERE id = ?", (int(disabled), _iso(_now()), user.id))
            if disabled:
                tx.execute("DELETE FROM web_sessions WHERE user_id = ?", (user.id,))
        log.info("user %s %s", user.username, "disabled" if disabled else "enabled")
        updated = self.user(username)
        assert updated is not None  # found above, and users are never deleted (disabled instead)
        return updated

    def set_password(self, username: str, password: str) -> None:
        user = self.user(username)
        if user is None:
            raise AccountError(f"no user {username!r}")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"password too short (at least {MIN_PASSWORD_LENGTH} characters)")
        with self._db.transaction() as tx:
            tx.execute("UPDATE web_users SET password_hash = ?, updated_at = ? WHERE id = ?", (self._hasher.hash(password), _iso(_now()), user.id))
            tx.execute("DELETE FROM web_sessions WHERE user_id = ?", (user.id,))
            TrustedBrowsers.forget(tx, user.username)

    # --- login -----------------------------------------------------------------------------------

    def login(self, username: str, password: str, client_ip: str, trusted_tokens: Sequence[str] = ()) -> LoginResult:
        """Check a sign-in attempt within the limits (:mod:`hub.web.limits`).

        The attempt's slot is reserved before the password is checked, so concurrent attempts beyond
        the limit are refused (``LIMITED``) without being evaluated. ``trusted_tokens``: the browser's
        trusted-browser cookie; on success the result carries that cookie's new value."""
        name = username.strip().lower()[:64]
        now = _now()
        trusted = self._trusted.reserve(name, trusted_tokens, now)
        reservation: Reservation | None = None
        if trusted is None:
            outcome = self._limiter.reserve(self._limiter.counters(name, client_ip), now)
            if isinstance(outcome, Refusal):
                log.warning("login for %r from %s refused before checking: %s limit reached", name, client_ip, outcome.scope)
                return LoginResult(LoginOutcome.LIMITED, retry_after_s=math.ceil(outcome.retry_after.total_seconds()))
            reservation = outcome
        user = self._check_password(name, password)
        self._record(name, client_ip, ok=user is not None)
        if user is None:
            return LoginResult(LoginOutcome.WRONG)
        if reservation is not None:
            self._limiter.release(reservation)
        token = self._trusted.issue(user.username, trusted, now)
        return LoginResult(LoginOutcome.OK, user=user, trusted_cookie=self._cookie_after(user, trusted_tokens, token))

    def authenticate(self, username: str, password: str, client_ip: str) -> User | None:
        """The user if the password matches an enabled account and the limits let it be checked."""
        return self.login(username, password, client_ip).user

    def _check_password(self, name: str, password: str) -> User | None:
        """Unknown users cost one hash too (no timing oracle)."""
        row = self._db.one("SELECT id, password_hash, disabled FROM web_users WHERE username = ?", (name,))
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
            self._verify(self._dummy_hash, password)
            return None
        if not self._verify(row[1], password) or row[2]:
            return None
        if self._hasher.check_needs_rehash(row[1]):
            with self._db.transaction() as tx:
                tx.execute("UPDATE web_users SET password_hash = ? WHERE id = ?", (self._hasher.hash(password), row[0]))
        return self.user(name)

    def _record(self, name: str, client_ip: str, *, ok: bool) -> None:
        """The attempt in ``web_login_attempts`` (who tried which account from where; kept four windows)."""
        now = _now()
        with self._db.transaction() as tx:
            tx.execute("INSERT INTO web_login_attempts (username, client_ip, at, ok) VALUES (?, ?, ?, ?)", (name, client_ip, _iso(now), int(ok)))
            tx.execute("DELETE FROM web_login_attempts WHERE at < ?", (_iso(now - 4 * self.limits.window),))
        if not ok:
            self._limiter.prune(now)

    def trusted_owners(self, tokens: Sequence[str]) -> dict[str, str]:
        """token -> username for the trusted-browser tokens that are still stored."""
        return self._trusted.owners(tokens)

    def _cookie_after(self, user: User, old: Sequence[str], new: str) -> str:
        """The trusted-browser cookie after ``user`` signed in: the new token first, other accounts' kept."""
        owners = self._trusted.owners(old)
        others = [t for t in old if owners.get(t) not in (None, user.username)]
        return cookie_value([new, *others])

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
                "INSERT INTO web_sessions (token_hash, user_id, csrf_token, created_at, last_seen_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
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
