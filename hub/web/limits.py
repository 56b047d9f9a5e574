"""Login limits, reserved in the database *before* a password is checked (docs/web.md, "Login limits").

Every sign-in attempt first reserves a slot in each of its counters with one conditional ``UPDATE``
(``… SET used = used + 1 WHERE … AND used < limit``). SQLite serialises writers (``BEGIN IMMEDIATE``);
PostgreSQL row-locks the counter and re-checks the condition on the committed row. So however many
requests arrive at once, in however many console processes, at most ``limit`` of them get a slot and
reach the password check. A failed attempt keeps its slot for the rest of the window; a successful one
gives it back.

Two lanes:

* **Trusted browser**: a browser that signed in to this account before carries a random token for it (a
  cookie; the database keeps only its SHA-256). Its attempts count against that token only, so a
  stranger's failures — from anywhere, even from the owner's address — never lock the owner's browser
  out. After ``per_trusted`` failures in a row the token stops counting as trusted; the next successful
  sign-in issues a fresh one.
* **Any other browser**: counted per (account, address), per address and per account. A stranger can
  exhaust the per-account counter and so keep the owner's *new* browsers out, but not her known ones.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from hub.web.db import Tx, WebDb

log = logging.getLogger(__name__)

MAX_TRUSTED_TOKENS = 5  # per browser (one per account signed in from it, e.g. a shared workstation)


@dataclass(frozen=True)
class LoginLimits:
    """Failed sign-ins allowed in ``window`` (a window starts at its first counted attempt)."""

    per_client: int = 5  # one account from one client address
    per_address: int = 20  # one client address, all accounts
    per_user: int = 10  # one account from browsers it does not trust, all addresses together
    per_trusted: int = 5  # one trusted browser's token, before it stops being trusted
    window: timedelta = timedelta(minutes=15)
    trusted_for: timedelta = timedelta(days=90)  # a trusted browser's token lives this long unused


class Scope(StrEnum):
    CLIENT = "client"  # (username, address)
    ADDRESS = "address"  # (—, address)
    USER = "user"  # (username, —)


@dataclass(frozen=True)
class Counter:
    scope: Scope
    username: str
    client_ip: str
    limit: int


@dataclass(frozen=True)
class Reservation:
    """Slots held by one attempt: (counter, the window start it was counted in)."""

    slots: tuple[tuple[Counter, str], ...]


@dataclass(frozen=True)
class Refusal:
    scope: Scope
    retry_after: timedelta


class _Full(Exception):
    """Raised inside the reservation transaction so that it rolls back every slot taken so far."""

    def __init__(self, counter: Counter, window_start: str) -> None:
        super().__init__(f"{counter.scope} counter full")
        self.counter = counter
        self.window_start = window_start


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class LoginLimiter:
    """The untrusted lane's counters in ``web_login_limits``."""

    def __init__(self, db: WebDb, limits: LoginLimits) -> None:
        self._db = db
        self.limits = limits

    def counters(self, username: str, client_ip: str) -> list[Counter]:
        """The counters an attempt from a browser the account does not trust must reserve, in lock order."""
        lim = self.limits
        counters = [
            Counter(Scope.ADDRESS, "", client_ip, lim.per_address),
            Counter(Scope.CLIENT, username, client_ip, lim.per_client),
            Counter(Scope.USER, username, "", lim.per_user),
        ]
        # One global order (scope, username, address) for every transaction: no deadlocks on PostgreSQL.
        return sorted(counters, key=lambda c: (c.scope.value, c.username, c.client_ip))

    def reserve(self, counters: Sequence[Counter], now: datetime) -> Reservation | Refusal:
        """A slot in every counter, or none at all and the counter that was full."""
        cutoff, stamp = iso(now - self.limits.window), iso(now)
        try:
            with self._db.transaction() as tx:
                return Reservation(tuple((c, self._take(tx, c, cutoff, stamp)) for c in counters))
        except _Full as full:
            expires = datetime.fromisoformat(full.window_start) + self.limits.window
            return Refusal(full.counter.scope, max(expires - now, timedelta(seconds=1)))

    @staticmethod
    def _take(tx: Tx, counter: Counter, cutoff: str, stamp: str) -> str:
        key = (counter.scope.value, counter.username, counter.client_ip)
        tx.execute(
            "INSERT INTO web_login_limits (scope, username, client_ip, window_start, used) "
            "VALUES (?, ?, ?, ?, 0) ON CONFLICT (scope, username, client_ip) DO NOTHING",
            (*key, stamp),
        )
        # A window that has run out starts again at this attempt; otherwise a slot only while one is left.
        taken = tx.execute(
            "UPDATE web_login_limits SET "
            "used = CASE WHEN window_start < ? THEN 1 ELSE used + 1 END, "
            "window_start = CASE WHEN window_start < ? THEN ? ELSE window_start END "
            "WHERE scope = ? AND username = ? AND client_ip = ? AND (window_start < ? OR used < ?)",
            (cutoff, cutoff, stamp, *key, cutoff, counter.limit),
        ).rowcount
        row = tx.execute("SELECT window_start FROM web_login_limits WHERE scope = ? AND username = ? AND client_ip = ?", key).fetchone()
        if taken != 1:
            raise _Full(counter, str(row[0]))
        return str(row[0])

    def release(self, reservation: Reservation) -> None:
        """Give the slots of a successful attempt back (only within the window they were taken in)."""
        with self._db.transaction() as tx:
            for counter, window_start in reservation.slots:
                tx.execute(
                    "UPDATE web_login_limits SET used = used - 1 WHERE scope = ? AND username = ? "
                    "AND client_ip = ? AND window_start = ? AND used > 0",
                    (counter.scope.value, counter.username, counter.client_ip, window_start),
                )

    def prune(self, now: datetime) -> None:
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM web_login_limits WHERE window_start < ?", (iso(now - self.limits.window),))


class TrustedBrowsers:
    """Tokens of browsers that signed in to an account before, in ``web_trusted_clients``."""

    def __init__(self, db: WebDb, limits: LoginLimits) -> None:
        self._db = db
        self.limits = limits

    def reserve(self, username: str, tokens: Iterable[str], now: datetime) -> str | None:
        """The hash of a token (from the browser's cookie) that is trusted for ``username`` and has a
        failure left, counting this attempt as a failure until it succeeds; None: the untrusted lane."""
        for digest in dict.fromkeys(token_hash(t) for t in tokens):
            with self._db.transaction() as tx:
                taken = tx.execute(
                    "UPDATE web_trusted_clients SET failures = failures + 1, last_used_at = ? "
                    "WHERE token_hash = ? AND username = ? AND failures < ? AND expires_at > ?",
                    (iso(now), digest, username, self.limits.per_trusted, iso(now)),
                ).rowcount
            if taken == 1:
                return digest
        return None

    def issue(self, username: str, replacing: str | None, now: datetime) -> str:
        """A new token for ``username`` after a successful sign-in (the one it came with is retired)."""
        token = secrets.token_urlsafe(32)
        with self._db.transaction() as tx:
            if replacing is not None:
                tx.execute("DELETE FROM web_trusted_clients WHERE token_hash = ?", (replacing,))
            tx.execute(
                "INSERT INTO web_trusted_clients (token_hash, username, failures, created_at, last_used_at, expires_at) VALUES (?, ?, 0, ?, ?, ?)",
                (token_hash(token), username, iso(now), iso(now), iso(now + self.limits.trusted_for)),
            )
            tx.execute("DELETE FROM web_trusted_clients WHERE expires_at < ? OR failures >= ?", (iso(now), self.limits.per_trusted))
        return token

    def owners(self, tokens: Iterable[str]) -> dict[str, str]:
        """token -> username for the tokens that are still stored."""
        by_hash = {token_hash(t): t for t in tokens}
        if not by_hash:
            return {}
        marks = ", ".join("?" for _ in by_hash)
        rows = self._db.query(f"SELECT token_hash, username FROM web_trusted_clients WHERE token_hash IN ({marks})", list(by_hash))
        return {by_hash[row[0]]: str(row[1]) for row in rows}

    @staticmethod
    def forget(tx: Tx, username: str) -> None:
        """No browser is trusted for ``username`` any more (password changed)."""
        tx.execute("DELETE FROM web_trusted_clients WHERE username = ?", (username,))


def parse_tokens(cookie: str | None) -> list[str]:
    """The tokens in a trusted-browser cookie (``.``-separated; anything malformed is ignored)."""
    if not cookie:
        return []
    tokens = [t for t in cookie.split(".") if 20 <= len(t) <= 64 and t.replace("-", "").replace("_", "").isalnum()]
    return tokens[:MAX_TRUSTED_TOKENS]


def cookie_value(tokens: Sequence[str]) -> str:
    return ".".join(tokens[:MAX_TRUSTED_TOKENS])
