"""Cookies, CSRF tokens and response headers.

* Session cookie: ``__Host-`` prefixed, ``Secure``, ``HttpOnly``, ``SameSite=Lax``, ``Path=/`` (the
  prefix and ``Secure`` are dropped only with ``--insecure-cookies`` for plain-HTTP development). The
  trusted-browser cookie is the same, with ``SameSite=Strict``.
* CSRF: every POST (state changes and exports) carries ``csrf_token`` (form field or ``X-CSRF-Token`` header). With a session it
  must equal the session's token (synchronizer token); the login form, before any session exists, uses
  a double-submit cookie whose HMAC under the console's secret is the form token. Cross-origin
  ``Origin`` headers are refused as well.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

CSP = (
    "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)


@dataclass(frozen=True)
class CookiePolicy:
    secure: bool = True

    @property
    def session_name(self) -> str:
        return "__Host-sonopi_session" if self.secure else "sonopi_session"

    @property
    def login_name(self) -> str:
        return "__Host-sonopi_login" if self.secure else "sonopi_login"

    @property
    def trusted_name(self) -> str:
        """The trusted-browser tokens (hub/web/limits.py); only the sign-in form needs them."""
        return "__Host-sonopi_trusted" if self.secure else "sonopi_trusted"

    def set(self, response: Response, name: str, value: str, max_age: int | None = None, samesite: Literal["lax", "strict"] = "lax") -> None:
        response.set_cookie(name, value, max_age=max_age, path="/", secure=self.secure, httponly=True, samesite=samesite)

    def clear(self, response: Response, name: str) -> None:
        response.delete_cookie(name, path="/", secure=self.secure, httponly=True, samesite="lax")


def login_token(secret: str, nonce: str) -> str:
    """The login form's CSRF token for a pre-session cookie ``nonce``."""
    return hmac.new(secret.encode(), b"login:" + nonce.encode(), hashlib.sha256).hexdigest()


def new_nonce() -> str:
    return secrets.token_urlsafe(24)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))


def same_origin(request: Request) -> bool:
    """False when the browser says the request came from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    scheme_host = origin.split("://", 1)[-1]
    return scheme_host == host


def add_security_headers(response: Response, *, hsts: bool) -> None:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes Chromium send "Origin: null"
    headers.setdefault("Cache-Control", "no-store")
    headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    if hsts:
        headers.setdefault("Strict-Transport-Security", "max-age=31536000")
