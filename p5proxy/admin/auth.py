"""Admin authentication: the admin key, a signed session cookie, CSRF tokens.

The session cookie is `<expiry>.<session id>.<HMAC>`; the HMAC key is derived from a random
secret made when this module is imported (before `--workers` forks, so every worker shares it)
and the configured admin key's SHA-256, so a restart or a changed admin key ends every session.
A CSRF token is an HMAC of the session id: POST forms carry it, and it is useless without the
cookie (which the browser sends only to same-site requests: SameSite=Strict).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from ..config import AdminConfig

__all__ = ["COOKIE", "check_key", "new_session", "read_session", "csrf_token", "check_csrf"]

COOKIE = "p5proxy_admin"
_PROCESS_SECRET = secrets.token_bytes(32)


def _secret(admin: AdminConfig) -> bytes:
    assert admin.key_sha256 is not None
    return hmac.new(_PROCESS_SECRET, b"session\0" + admin.key_sha256.encode(),
                    hashlib.sha256).digest()


def _sign(admin: AdminConfig, payload: str) -> str:
    return hmac.new(_secret(admin), payload.encode(), hashlib.sha256).hexdigest()


def check_key(admin: AdminConfig, submitted: str) -> bool:
    """Whether `submitted` is the admin key (compared as SHA-256, in constant time)."""
    if admin.key_sha256 is None or not submitted:
        return False
    digest = hashlib.sha256(submitted.encode()).hexdigest()
    return hmac.compare_digest(digest, admin.key_sha256)


def new_session(admin: AdminConfig, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + admin.session_secs)
    payload = f"{expires}.{secrets.token_urlsafe(16)}"
    return f"{payload}.{_sign(admin, payload)}"


def read_session(admin: AdminConfig, cookie: str | None, now: float | None = None) -> str | None:
    """The session id of a valid, unexpired cookie; None otherwise."""
    if not cookie or admin.key_sha256 is None:
        return None
    parts = cookie.split(".")
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    payload = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(admin, payload), parts[2]):
        return None
    if int(parts[0]) <= (time.time() if now is None else now):
        return None
    return parts[1]


def csrf_token(admin: AdminConfig, session_id: str) -> str:
    return _sign(admin, "csrf\0" + session_id)[:40]


def check_csrf(admin: AdminConfig, session_id: str, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(csrf_token(admin, session_id), token or "")
