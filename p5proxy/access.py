"""Client access, per request: which key is calling (the middleware), whether it may use the
model and is within its limits (`admit`, right after the request is decoded), and the tokens
its answer used (`settle`, by the middleware once the handler is over, from the request's
record).

Token accounting (`tpm`): when a request is admitted, the gateway's estimate of its input
tokens (about 4 bytes of the JSON body a token, images at a fixed cost) is counted at once, so
that a burst of parallel requests is throttled before any answer is back. When the answer
ends, its output tokens are added, and the estimate is corrected to the input the upstream
reported (prompt tokens, cache reads and writes included) when it reported any. An answer cut
short counts what was reported until then.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp import web

from .appkeys import ACCESS, CLIENT, RECORD
from .canonical import ChatRequest
from .clientkeys import ClientKey, KeyRing
from .config import Config
from .errors import AuthError, RequestError
from .ratelimit import Check, Limiter
from .tokens import estimate_from_body_size, estimate_input_tokens

if TYPE_CHECKING:
    from .app import GatewayState

__all__ = ["Access", "PermissionDenied", "RateLimited", "presented_key", "admit",
           "check_model", "settle", "configured_secrets"]

class PermissionDenied(RequestError):
    status = 403
    kind = "permission_error"


class RateLimited(RequestError):
    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, code="rate_limit_exceeded",
                         retry_after=str(max(1, math.ceil(retry_after)))
                         if retry_after is not None else None)
        self.should_retry = retry_after is not None


def presented_key(request: web.Request) -> str | None:
    """The key a client sent: `x-api-key`, else `Authorization: Bearer` (both on both APIs)."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie", re.IGNORECASE)
_MIN_SECRET = 8   # shorter values ("k", "ollama") would garble messages and hide nothing


def _url_secrets(value: Any) -> list[str]:
    if not isinstance(value, str) or "@" not in value or "://" not in value:
        return []
    try:
        parts = urlsplit(value)
        return [s for s in (parts.password, parts.username) if s]
    except ValueError:
        return []


def configured_secrets(config: Config) -> list[str]:
    """Upstream keys, secret-looking provider headers, and passwords in configured URLs
    (Redis, proxies): the texts that must never reach a client or a log."""
    found: list[str] = []
    for provider in config.providers.values():
        found += provider.api_keys
        found += [v for k, v in provider.headers if _SECRET_HEADER.search(k)]
        for value in (*provider.options.values(), getattr(provider, "proxy", None)):
            found += _url_secrets(value)   # e.g. a proxy URL with credentials
    found += [k.key for k in config.auth_keys if k.key]
    found += _url_secrets(getattr(config, "upstream_proxy", None))
    found += _url_secrets(config.redis.url) + _url_secrets(config.cache.redis_url)
    return sorted({s for s in found if len(s) >= _MIN_SECRET}, key=len, reverse=True)


class Access:
    """The key ring, the limiter and the secrets to keep out of errors, for one application.
    The ring and the secrets follow the configuration in force (a reload swaps
    `state.config`); the limiter's counters, named by key id, stay."""

    def __init__(self, state: GatewayState) -> None:
        self._state = state
        self.limiter = Limiter(lambda: state.redis)
        self._load(state.config)

    def _load(self, config: Config) -> None:
        self._config = config
        self.ring = KeyRing(config.auth_keys)
        self.limited = any(k.limited for k in self.ring.keys)
        secrets = configured_secrets(config)
        self._secrets = re.compile("|".join(map(re.escape, secrets))) if secrets else None

    def _current(self) -> None:
        if self._state.config is not self._config:   # reloaded
            self._load(self._state.config)

    def redact(self, text: str, request: web.Request | None = None) -> str:
        """`text` without configured secrets or the caller's own key (errors only: upstreams
        sometimes echo the key they were sent)."""
        self._current()
        if self._secrets is not None:
            text = self._secrets.sub("***", text)
        presented = presented_key(request) if request is not None else None
        if presented and len(presented) >= _MIN_SECRET and presented in text:
            text = text.replace(presented, "***")
        return text

    def authenticate(self, request: web.Request) -> ClientKey | None:
        """The caller's key, or None when auth is open; raises AuthError (401)."""
        self._current()
        if not self.ring:
            return None
        presented = presented_key(request)
        if presented is None:
            raise AuthError("missing API key: send it as x-api-key or Authorization: Bearer")
        key = self.ring.match(presented)
        if key is None:
            raise AuthError("invalid API key")
        return key

    def describe(self) -> dict[str, Any]:
        """For /health: counts and the counter backend, no keys or ids."""
        self._current()
        return {"keys": len(self.ring.keys),
                "restricted": sum(1 for k in self.ring.keys if k.models),
                "limited": sum(1 for k in self.ring.keys if k.limited),
                "limits_backend": self.limiter.backend if self.limited else None}


def check_model(request: web.Request, model: str) -> ClientKey | None:
    """403 unless the caller's key may use `model` (the name the client asked for)."""
    key = request.get(CLIENT)
    if key is not None and not key.allows(model):
        raise PermissionDenied(f"model: this API key ({key.id}) may not use model {model!r}",
                               param="model")
    return key


async def admit(request: web.Request, req: ChatRequest) -> None:
    """Model permission, then requests and tokens per minute (429 with Retry-After). Call once
    per chat request, right after it is decoded."""
    key = check_model(request, req.model)
    if key is None or not key.limited:
        return
    checks = []
    if key.rpm is not None:
        checks.append(Check(f"{key.id}:rpm", key.rpm, 1))
    estimate = 0
    if key.tpm is not None:
        size = request.content_length
        estimate = estimate_from_body_size(req, size) if size else estimate_input_tokens(req)
        if estimate > key.tpm:
            raise RateLimited(f"this request (about {estimate} input tokens) is larger than the "
                              f"tokens-per-minute limit of API key {key.id} ({key.tpm})",
                              retry_after=None)
        checks.append(Check(f"{key.id}:tpm", key.tpm, estimate))
    verdict = await request.app[ACCESS].limiter.hit(checks)
    if not verdict.ok:
        what = ("requests per minute" if verdict.refused and verdict.refused.endswith(":rpm")
                else "tokens per minute")
        limit = key.rpm if what.startswith("requests") else key.tpm
        raise RateLimited(f"rate limit of API key {key.id} reached: {limit} {what}; "
                          f"try again in {max(1, math.ceil(verdict.retry_after))} s",
                          retry_after=verdict.retry_after)
    if key.tpm is not None:
        request[_ESTIMATE] = estimate


_ESTIMATE: web.RequestKey[int] = web.RequestKey("p5proxy_tpm_estimate", int)


def settle(request: web.Request) -> None:
    """The request is over (answered, failed or cut): count the tokens its answer used against
    the key's tpm, from the usage its record noted (record.py: the aggregated answer, or the
    stream's events as they were written)."""
    estimate = request.get(_ESTIMATE)
    key = request.get(CLIENT)
    if estimate is None or key is None:
        return
    rec = request.get(RECORD)
    if rec is None:
        return
    reported = rec.input_tokens   # prompt tokens, cache reads and writes included
    used = rec.output_tokens + (reported - estimate if reported else 0)
    request.app[ACCESS].limiter.add(f"{key.id}:tpm", used)
