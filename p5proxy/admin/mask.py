"""Secrets out of everything the admin page shows: keys, passwords in URLs, auth headers.

A value is masked when its name says it is a secret (`api_key`, `keys`, `key_sha256`,
`password`, `token`, `secret`, `authorization`, `cookie`...), and any string has the password
of a URL (`redis://user:pw@host`) and secret-looking query parameters (`?api_key=...`) masked,
whatever its name. Applied to the whole live configuration, so sections added later are
covered without being listed here.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..masking import mask_text

__all__ = ["mask_secret", "mask_text", "masked", "config_view"]

_SECRET_WORDS = frozenset(("key", "keys", "secret", "secrets", "password", "passwd", "pass",
                           "pwd", "token", "authorization", "auth", "cookie", "credential",
                           "credentials", "sha256", "apikey", "dsn"))
_WORD_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z])(?=[0-9])")


def mask_secret(value: Any) -> str:
    """`****` plus the last 4 characters of a long secret (enough to tell keys apart)."""
    text = str(value)
    if not text:
        return ""
    return "****" + text[-4:] if len(text) >= 16 else "****"


def _is_secret_name(name: str) -> bool:
    words = [w for w in _WORD_SPLIT.split(name.lower()) if w]
    return any(w in _SECRET_WORDS for w in words) or name.lower().endswith(("key", "keys"))


def masked(value: Any, name: str = "") -> Any:
    """A plain, YAML-safe copy of `value` (dataclasses, dicts, lists) with secrets masked."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [masked(v, name) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if _is_secret_name(name):
        return mask_secret(value)
    return mask_text(str(value))


def config_view(config: Any) -> dict[str, Any]:
    """The live configuration as a masked dict; provider headers as a name -> value mapping so
    that `Authorization` and `x-api-key` headers are recognised by name."""
    view: dict[str, Any] = masked(config)
    for name, provider in getattr(config, "providers", {}).items():
        headers = dict(getattr(provider, "headers", ()))
        view["providers"][name]["headers"] = masked(headers)
    return view
