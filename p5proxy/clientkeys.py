"""Client keys: who is calling (`auth.keys`) and which models they may use.

Keys are kept as SHA-256 digests only. A presented key is hashed once and compared with every
configured digest by `hmac.compare_digest` (no early exit, so the time does not depend on which
key matched or how much of it); an empty key never matches.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Iterable

from .config import ClientKeyConfig

__all__ = ["ClientKey", "KeyRing", "hash_key"]


def hash_key(key: str) -> str:
    """The hex SHA-256 of a key, as `auth.keys[].key_sha256` wants it."""
    return hashlib.sha256(key.encode()).hexdigest()


class ClientKey:
    """An authenticated caller. `id` is stable and safe to log; the key itself is not kept."""

    __slots__ = ("id", "digest", "models", "rpm", "tpm", "_allowed")

    def __init__(self, config: ClientKeyConfig) -> None:
        self.id = config.id
        self.digest = config.sha256
        self.models = config.models
        self.rpm = config.rpm
        self.tpm = config.tpm
        self._allowed: re.Pattern[str] | None = (
            re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in config.models))
            if config.models else None)

    def allows(self, model: str) -> bool:
        """Whether this key may use the model name a client asked for (globs as in `models:`)."""
        return self._allowed is None or self._allowed.match(model) is not None

    @property
    def limited(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    def __repr__(self) -> str:
        return f"ClientKey(id={self.id!r})"


class KeyRing:
    def __init__(self, keys: Iterable[ClientKeyConfig]) -> None:
        self.keys = tuple(ClientKey(k) for k in keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def match(self, presented: str | None) -> ClientKey | None:
        if not presented:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for key in self.keys:   # every key is compared, whichever matches
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found
