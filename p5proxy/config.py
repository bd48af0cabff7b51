"""Configuration: a YAML file plus the environment, checked once into frozen dataclasses.

`load_config(path)` raises ConfigError listing every problem with its path in the file
(`providers.local.base_url: ...`); `check-config` prints them. Values may use `${VAR}` or
`${VAR:-default}`. With no file, providers come from OPENAI_* / ANTHROPIC_* variables.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .forwarded import Network, parse_networks

__all__ = ["Config", "ServerConfig", "ClientKeyConfig", "AdminConfig", "CacheConfig",
           "RedisConfig", "ProviderConfig", "ModelConfig", "Timeouts", "RetryConfig", "load_config",
           "LoggingConfig", "LogsConfig", "MetricsConfig", "config_from_dict", "DEFAULT_PORT",
           "DEFAULT_MAX_BODY_BYTES"]

DEFAULT_PORT = 18185
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024   # image-heavy Claude Code requests reach tens of MB
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 10.0
    first_byte: float = 300.0   # request sent -> response headers (connecting included)
    idle: float = 300.0         # longest silence between two chunks of a stream
    total: float | None = None  # None: a healthy long generation is never cut


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Retries before the first byte reaches the client (see p5proxy/retry.py)."""
    attempts: int = 3             # per model (primary, then each fallback), the first included
    backoff_base: float = 0.5     # delay before retry n: about base * 2**(n-1), jittered
    backoff_max: float = 8.0      # cap on one delay; a longer Retry-After is not waited for
    max_wait: float = 20.0        # seconds of waiting in all for one request
    cooldown_base: float = 1.0    # a 429 without Retry-After cools its key 1, 2, 4... seconds
    cooldown_max: float = 60.0


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    heartbeat_secs: float = 15.0
    grace_secs: float = 30.0          # on SIGTERM: how long in-flight requests may take to finish
    pool_limit: int = 1000            # upstream connections in total
    pool_limit_per_host: int = 0      # 0: no per-host cap
    trusted_proxies: tuple[Network, ...] = ()   # X-Forwarded-For is believed only from these
    max_json_depth: int = 64          # deepest nesting of arrays/objects in a request body
    client_read_timeout: float = 60.0  # seconds for a client's headers, and again for its body


@dataclass(frozen=True, slots=True)
class ClientKeyConfig:
    """One entry of `auth.keys`. Keys are matched by their SHA-256 only."""
    id: str                                   # stable and not secret: logs, limits, cache
    sha256: bytes = field(repr=False)         # digest of the key (32 bytes)
    models: tuple[str, ...] = ()              # glob patterns of model names; empty: every model
    rpm: int | None = None                    # requests per minute; None: no limit
    tpm: int | None = None                    # tokens per minute; None: no limit
    # The key itself when the file gives it in plain text (never for key_sha256): used only by
    # the admin page's "Try it", which calls the gateway as a client. Never compared or shown.
    key: str | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Response cache and in-flight de-duplication (plugins/cache_response.py)."""
    enabled: bool = True
    ttl_secs: float = 300.0
    tool_ttl_secs: float = 120.0          # requests that carry tools
    max_entry_bytes: int = 32 * 1024 * 1024   # 0: no limit; larger results are served, not kept
    memory_entries: int = 256
    redis_url: str | None = None          # second tier; falls back to redis.url
    shared_across_keys: bool = False      # True: one entry serves every client key
    dedup: bool = True                    # identical concurrent requests share one upstream call
    lease_secs: float = 10.0              # cross-instance leader lease, renewed while it streams


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """The Redis that gateway instances share (cache tier, leases, cooldowns, limits)."""
    url: str | None = None
    prefix: str = "p5proxy:"
    op_timeout: float = 0.25


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin page (`/admin`): disabled (404) unless a key or its SHA-256 is configured."""
    key_sha256: str | None = None     # hex digest of the admin key (`admin.key` is hashed here)
    session_secs: float = 43200.0     # login cookie lifetime

    @property
    def enabled(self) -> bool:
        return self.key_sha256 is not None


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    name: str
    type: str
    base_url: str
    api_keys: tuple[str, ...] = ()
    key_groups: tuple[str, ...] = ()   # per key: its group ("" = a group of its own)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retry: RetryConfig | None = None   # None: the top-level `retry`
    proxy: str | None = None           # None: environment; "": direct; else a proxy URL
    headers: tuple[tuple[str, str], ...] = ()
    options: dict[str, Any] = field(default_factory=dict)   # everything else, for the provider plugin


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """One entry of `models:`; `pattern` may be a glob (`claude-haiku-*`)."""
    pattern: str
    provider: str
    model: str | None = None          # upstream model name; None: the name the client used
    max_tokens: int | None = None     # default when the client sends none (OpenAI clients)
    max_output_tokens: int | None = None  # clamp: the upstream model's output cap
    filters: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()   # model names tried in order when this one fails
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_glob(self) -> bool:
        return any(c in self.pattern for c in "*?[")


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """`logging:` the per-request line on logger p5proxy.access (README: Metrics and request
    logs)."""
    format: str = "text"          # text (key=value) | json (every log line a JSON object)
    access: bool = True           # one line per API request at INFO
    bodies: bool = False          # add request/response bodies, redacted and capped
    body_max_bytes: int = 4096


@dataclass(frozen=True, slots=True)
class LogsConfig:
    """`logs:` the request log store (p5proxy/reqlog)."""
    enabled: bool = True
    database_url: str | None = None   # None: sqlite:///<data dir>/p5proxy-requests.db
    table: str = "p5proxy_requests"
    retention_days: float = 30.0      # 0: no age limit
    max_rows: int = 1_000_000         # 0: no row limit
    batch_rows: int = 500
    flush_secs: float = 1.0
    queue_max: int = 10_000           # rows waiting in memory; more are dropped and counted


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """`metrics:` GET /metrics (Prometheus text format)."""
    enabled: bool = True
    key: str | None = None            # bearer token for /metrics (admin.key also works)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    auth_keys: tuple[ClientKeyConfig, ...] = ()
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    models: tuple[ModelConfig, ...] = ()
    default_model: str | None = None
    default_max_tokens: int = 4096
    plugins_dir: str | None = None
    plugins: dict[str, Any] = field(default_factory=dict)   # per-plugin settings: config.plugin(name)
    cache: CacheConfig = field(default_factory=CacheConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    upstream_proxy: str | None = None   # every provider's proxy unless it names its own
    source: str = "<defaults>"
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    @property
    def shared_redis_url(self) -> str | None:
        return self.redis.url or self.cache.redis_url

    def plugin(self, name: str) -> dict[str, Any]:
        value = self.plugins.get(name)
        return value if isinstance(value, dict) else {}


# --- loading ---------------------------------------------------------------------------------

def _expand(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _ENV_REF.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    return value


def _env_providers(env: dict[str, str]) -> dict[str, Any]:
    """Providers implied by the usual SDK variables, for running without a file."""
    providers: dict[str, Any] = {}
    if env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_KEY"):
        providers["openai"] = {"type": "openai",
                               "base_url": env.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                               "api_key": env.get("OPENAI_API_KEY", "")}
    if env.get("ANTHROPIC_BASE_URL") or env.get("ANTHROPIC_API_KEY"):
        providers["anthropic"] = {"type": "anthropic",
                                  "base_url": env.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
                                  "api_key": env.get("ANTHROPIC_API_KEY", "")}
    return providers


def _env_models(providers: dict[str, Any]) -> dict[str, Any]:
    """Without a file: claude-* names go to an Anthropic provider, everything else to OpenAI."""
    models: dict[str, Any] = {}
    if "anthropic" in providers:
        models["claude-*"] = {"provider": "anthropic"}
    if "openai" in providers:
        models["*"] = {"provider": "openai"}
    elif "anthropic" in providers:
        models["*"] = {"provider": "anthropic"}
    return models


def load_config(path: str | os.PathLike[str] | None = None,
                env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    if path is None:
        path = env.get("P5PROXY_CONFIG") or None
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = _expand(loaded, env)
    else:
        providers = _env_providers(env)
        data = {"providers": providers, "models": _env_models(providers)}
    _env_overrides(data, env)
    port_env = env.get("P5PROXY_PORT") or env.get("P5JS2API_PORT")
    if port_env:
        data.setdefault("server", {})
        if isinstance(data["server"], dict):
            data["server"] = {**data["server"], "port": port_env}
    if env.get("UPSTREAM_PROXY_URL") and not data.get("upstream_proxy"):
        data["upstream_proxy"] = env["UPSTREAM_PROXY_URL"]
    admin_env = env.get("P5PROXY_ADMIN_KEY")
    if admin_env:
        admin = data.get("admin")
        data["admin"] = {**(admin if isinstance(admin, dict) else {}), "key": admin_env,
                         "key_sha256": None}
    proxies_env = env.get("P5PROXY_TRUSTED_PROXIES")
    if proxies_env:   # comma-separated; replaces server.trusted_proxies of the file
        data.setdefault("server", {})
        if isinstance(data["server"], dict):
            data["server"] = {**data["server"], "trusted_proxies": [
                p.strip() for p in proxies_env.split(",") if p.strip()]}
    return config_from_dict(data, source=source)


# environment variables that override a setting of the file: (section, key, variable)
_ENV_SETTINGS = (
    ("cache", "enabled", "RESPONSE_CACHE_ENABLED"),
    ("cache", "ttl_secs", "RESPONSE_CACHE_TTL_SECS"),
    ("cache", "tool_ttl_secs", "RESPONSE_CACHE_TOOL_TTL_SECS"),
    ("cache", "max_entry_bytes", "RESPONSE_CACHE_MAX_ENTRY_BYTES"),
    ("cache", "redis_url", "RESPONSE_CACHE_REDIS_URL"),
    ("redis", "url", "P5PROXY_REDIS_URL"),
)


def _env_overrides(data: dict[str, Any], env: dict[str, str]) -> None:
    for section, key, var in _ENV_SETTINGS:
        value = env.get(var)
        if value is None or value == "":
            continue
        current = data.get(section)
        data[section] = {**(current if isinstance(current, dict) else {}), key: value}


class _Checker:
    """Collects every problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be a mapping, got {type(value).__name__}")
            return {}
        return value

    def number(self, value: Any, path: str, default: Any, *, integer: bool = False,
               minimum: float = 0, allow_none: bool = False) -> Any:
        if value is None:
            return None if allow_none else default
        try:
            number = int(value) if integer else float(value)
        except (TypeError, ValueError):
            self.fail(path, f"must be a {'whole ' if integer else ''}number, got {value!r}")
            return default
        if number < minimum:
            self.fail(path, f"must be at least {minimum}, got {number}")
            return default
        return number

    def string(self, value: Any, path: str, *, required: bool = False) -> str | None:
        if value is None or value == "":
            if required:
                self.fail(path, "is required")
            return None
        if not isinstance(value, (str, int, float)):
            self.fail(path, f"must be a string, got {type(value).__name__}")
            return None
        return str(value)

    def flag(self, value: Any, path: str, default: bool) -> bool:
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        self.fail(path, f"must be true or false, got {value!r}")
        return default

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,) if value else ()
        if not isinstance(value, list):
            self.fail(path, "must be a list of strings")
            return ()
        return tuple(str(v) for v in value if v not in (None, ""))


_SERVER_KEYS = {"host", "port", "max_body_bytes", "heartbeat_secs", "grace_secs", "pool_limit",
                "pool_limit_per_host", "trusted_proxies", "max_json_depth",
                "client_read_timeout"}
_TOP_KEYS = {"server", "auth", "providers", "models", "default_model", "default_max_tokens",
             "plugins_dir", "plugins", "cache", "redis", "admin", "logging", "logs", "metrics",
             "retry", "upstream_proxy"}
_PROVIDER_KEYS = {"type", "base_url", "api_key", "api_keys", "timeouts", "headers", "retry",
                  "proxy"}
_MODEL_KEYS = {"provider", "model", "max_tokens", "max_output_tokens", "filters", "fallbacks"}
_RETRY_KEYS = ("attempts", "backoff_base", "backoff_max", "max_wait", "cooldown_base",
               "cooldown_max")
_CACHE_KEYS = {"enabled", "ttl_secs", "tool_ttl_secs", "max_entry_bytes", "memory_entries",
               "redis_url", "shared_across_keys", "dedup", "lease_secs"}
_REDIS_KEYS = {"url", "prefix", "op_timeout"}


def _unknown(c: _Checker, raw: dict[str, Any], section: str, known: set[str]) -> None:
    for key in raw:
        if key not in known:
            c.fail(f"{section}.{key}", f"unknown setting (known: {', '.join(sorted(known))})")


def _redis_url(c: _Checker, value: Any, path: str) -> str | None:
    url = c.string(value, path)
    if url and not url.startswith(("redis://", "rediss://", "unix://")):
        c.fail(path, "must start with redis://, rediss:// or unix://")
        return None
    return url


def _cache(c: _Checker, raw: dict[str, Any]) -> CacheConfig:
    _unknown(c, raw, "cache", _CACHE_KEYS)
    d = CacheConfig()
    return CacheConfig(
        enabled=c.flag(raw.get("enabled"), "cache.enabled", d.enabled),
        ttl_secs=c.number(raw.get("ttl_secs"), "cache.ttl_secs", d.ttl_secs),
        tool_ttl_secs=c.number(raw.get("tool_ttl_secs"), "cache.tool_ttl_secs", d.tool_ttl_secs),
        max_entry_bytes=c.number(raw.get("max_entry_bytes"), "cache.max_entry_bytes",
                                 d.max_entry_bytes, integer=True),
        memory_entries=c.number(raw.get("memory_entries"), "cache.memory_entries",
                                d.memory_entries, integer=True),
        redis_url=_redis_url(c, raw.get("redis_url"), "cache.redis_url"),
        shared_across_keys=c.flag(raw.get("shared_across_keys"), "cache.shared_across_keys",
                                  d.shared_across_keys),
        dedup=c.flag(raw.get("dedup"), "cache.dedup", d.dedup),
        lease_secs=c.number(raw.get("lease_secs"), "cache.lease_secs", d.lease_secs,
                            minimum=0.5),
    )


def _redis(c: _Checker, raw: dict[str, Any]) -> RedisConfig:
    _unknown(c, raw, "redis", _REDIS_KEYS)
    d = RedisConfig()
    return RedisConfig(
        url=_redis_url(c, raw.get("url"), "redis.url"),
        prefix=c.string(raw.get("prefix"), "redis.prefix") or d.prefix,
        op_timeout=c.number(raw.get("op_timeout"), "redis.op_timeout", d.op_timeout,
                            minimum=0.01),
    )


def _server(c: _Checker, raw: dict[str, Any]) -> ServerConfig:
    for key in raw:
        if key not in _SERVER_KEYS:
            c.fail(f"server.{key}", f"unknown setting (known: {', '.join(sorted(_SERVER_KEYS))})")
    d = ServerConfig()
    port = c.number(raw.get("port"), "server.port", d.port, integer=True, minimum=0)
    if port > 65535:
        c.fail("server.port", f"must be at most 65535, got {port}")
    proxies, bad = parse_networks(c.strings(raw.get("trusted_proxies"), "server.trusted_proxies"))
    for value in bad:
        c.fail("server.trusted_proxies", f"{value!r} is not an IP address or CIDR network")
    max_json_depth = c.number(raw.get("max_json_depth"), "server.max_json_depth",
                              d.max_json_depth, integer=True, minimum=2)
    if max_json_depth > 250:   # orjson encodes at most 255 levels
        c.fail("server.max_json_depth", f"must be at most 250, got {max_json_depth}")
    return ServerConfig(
        host=c.string(raw.get("host"), "server.host") or d.host,
        port=port,
        max_body_bytes=c.number(raw.get("max_body_bytes"), "server.max_body_bytes",
                                d.max_body_bytes, integer=True, minimum=1024),
        heartbeat_secs=c.number(raw.get("heartbeat_secs"), "server.heartbeat_secs",
                                d.heartbeat_secs, minimum=0.05),
        grace_secs=c.number(raw.get("grace_secs"), "server.grace_secs", d.grace_secs),
        pool_limit=c.number(raw.get("pool_limit"), "server.pool_limit", d.pool_limit,
                            integer=True, minimum=0),
        pool_limit_per_host=c.number(raw.get("pool_limit_per_host"), "server.pool_limit_per_host",
                                     d.pool_limit_per_host, integer=True, minimum=0),
        trusted_proxies=proxies,
        max_json_depth=max_json_depth,
        client_read_timeout=c.number(raw.get("client_read_timeout"), "server.client_read_timeout",
                                     d.client_read_timeout, minimum=0.05),
    )


_CLIENT_KEY_KEYS = {"id", "key", "key_sha256", "models", "rpm", "tpm"}


def _client_key(c: _Checker, raw: Any, path: str) -> ClientKeyConfig | None:
    """`auth.keys[i]`: a plain key, or {id, key | key_sha256, models, rpm, tpm}."""
    if isinstance(raw, (str, int)) and not isinstance(raw, bool):
        raw = {"key": str(raw)}
    if not isinstance(raw, dict):
        c.fail(path, f"must be a key (a string) or a mapping, got {type(raw).__name__}")
        return None
    _unknown(c, raw, path, _CLIENT_KEY_KEYS)
    key = c.string(raw.get("key"), f"{path}.key")
    hexdigest = c.string(raw.get("key_sha256"), f"{path}.key_sha256")
    digest: bytes | None = None
    if key and hexdigest:
        c.fail(path, "give key or key_sha256, not both")
    elif key:
        digest = hashlib.sha256(key.encode()).digest()
    elif hexdigest:
        try:
            digest = bytes.fromhex(hexdigest.strip())
        except ValueError:
            digest = None
        if digest is None or len(digest) != 32:
            c.fail(f"{path}.key_sha256", "must be 64 hex digits (`p5proxy hash-key` prints them)")
            return None
    else:
        c.fail(path, "needs a non-empty key or key_sha256")   # an empty key never matches
        return None
    if digest is None:
        return None
    models = raw.get("models")
    if models is not None and not isinstance(models, (str, list)):
        c.fail(f"{path}.models", "must be a list of model names or glob patterns")
    return ClientKeyConfig(
        id=c.string(raw.get("id"), f"{path}.id") or "key-" + digest.hex()[:8],
        sha256=digest,
        models=c.strings(models, f"{path}.models") if isinstance(models, (str, list)) else (),
        rpm=c.number(raw.get("rpm"), f"{path}.rpm", None, integer=True, minimum=1,
                     allow_none=True),
        tpm=c.number(raw.get("tpm"), f"{path}.tpm", None, integer=True, minimum=1,
                     allow_none=True),
        key=key or None,
    )


def _auth(c: _Checker, raw: dict[str, Any]) -> tuple[ClientKeyConfig, ...]:
    _unknown(c, raw, "auth", {"keys"})
    entries = raw.get("keys")
    if entries is None or entries == "":
        return ()
    if not isinstance(entries, list):
        entries = [entries]
    keys: list[ClientKeyConfig] = []
    for i, entry in enumerate(entries):
        if entry is None or entry == "":
            continue
        key = _client_key(c, entry, f"auth.keys.{i}")
        if key is None:
            continue
        if any(k.sha256 == key.sha256 for k in keys):
            c.fail(f"auth.keys.{i}", "the same key is listed twice")
        elif any(k.id == key.id for k in keys):
            c.fail(f"auth.keys.{i}.id", f"id {key.id!r} is used twice")
        else:
            keys.append(key)
    return tuple(keys)


def _admin(c: _Checker, raw: dict[str, Any],
           client_keys: tuple[ClientKeyConfig, ...]) -> AdminConfig:
    client_digests = {k.sha256.hex() for k in client_keys}
    for name in raw:
        if name not in ("key", "key_sha256", "session_secs"):
            c.fail(f"admin.{name}", "unknown setting (known: key, key_sha256, session_secs)")
    key = c.string(raw.get("key"), "admin.key")
    digest = c.string(raw.get("key_sha256"), "admin.key_sha256")
    if key is not None and digest is not None:
        c.fail("admin", "give either key or key_sha256, not both")
    if key is not None:
        if len(key) < 12:
            c.fail("admin.key", "must be at least 12 characters long")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in client_digests:
            c.fail("admin.key", "must differ from every client key in auth.keys")
    elif digest is not None:
        digest = digest.lower()
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            c.fail("admin.key_sha256", "must be 64 hexadecimal digits (sha256sum of the key)")
        elif digest in client_digests:
            c.fail("admin.key_sha256", "must differ from every client key in auth.keys")
    return AdminConfig(key_sha256=digest, session_secs=c.number(
        raw.get("session_secs"), "admin.session_secs", AdminConfig().session_secs, minimum=60))


def _timeouts(c: _Checker, raw: Any, path: str) -> Timeouts:
    raw = c.mapping(raw, path)
    d = Timeouts()
    for key in raw:
        if key not in ("connect", "first_byte", "idle", "total"):
            c.fail(f"{path}.{key}", "unknown timeout (known: connect, first_byte, idle, total)")
    return Timeouts(
        connect=c.number(raw.get("connect"), f"{path}.connect", d.connect, minimum=0.001),
        first_byte=c.number(raw.get("first_byte"), f"{path}.first_byte", d.first_byte, minimum=0.001),
        idle=c.number(raw.get("idle"), f"{path}.idle", d.idle, minimum=0.001),
        total=c.number(raw.get("total"), f"{path}.total", None, minimum=0.001, allow_none=True),
    )


def _retry(c: _Checker, raw: Any, path: str, base: RetryConfig) -> RetryConfig:
    """`retry:` at the top level, or a provider's (its unset keys come from the top level)."""
    raw = c.mapping(raw, path)
    for key in raw:
        if key not in _RETRY_KEYS:
            c.fail(f"{path}.{key}", f"unknown setting (known: {', '.join(_RETRY_KEYS)})")
    values = {key: c.number(raw.get(key), f"{path}.{key}", getattr(base, key),
                            integer=key == "attempts", minimum=1 if key == "attempts" else 0)
              for key in _RETRY_KEYS}
    return RetryConfig(**values)


def _proxy(c: _Checker, value: Any, path: str) -> str | None:
    """A proxy URL; `false`, "" or "none" mean a direct connection; unset means None."""
    if value is None:
        return None
    if value is False or (isinstance(value, str) and value.strip().lower() in ("", "none",
                                                                              "direct")):
        return ""
    url = c.string(value, path)
    if url is not None and not url.startswith(("http://", "https://")):
        c.fail(path, "must be an http:// or https:// proxy URL (or false for none)")
        return None
    return url


def _keys(c: _Checker, raw: dict[str, Any], path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`api_key` and `api_keys` (strings, or {key, group} mappings) -> keys and their groups."""
    value = raw.get("api_keys")
    items = [value] if isinstance(value, (str, dict)) else value
    if items is None:
        items = []
    if not isinstance(items, list):
        c.fail(f"{path}.api_keys", "must be a list of keys (strings or {key: ..., group: ...})")
        items = []
    single = c.string(raw.get("api_key"), f"{path}.api_key")
    keys, groups = ([single], [""]) if single else ([], [])
    for i, item in enumerate(items):
        where = f"{path}.api_keys[{i}]"
        if isinstance(item, dict):
            for key in item:
                if key not in ("key", "group"):
                    c.fail(f"{where}.{key}", "unknown setting (known: key, group)")
            key = c.string(item.get("key"), f"{where}.key")
            group = c.string(item.get("group"), f"{where}.group") or ""
        else:
            key, group = c.string(item, where), ""
        if key:   # an empty entry (an unset ${VAR}) is skipped
            keys.append(key)
            groups.append(group)
    return tuple(keys), tuple(groups)


def _provider(c: _Checker, name: str, raw: Any, retry: RetryConfig) -> ProviderConfig | None:
    path = f"providers.{name}"
    raw = c.mapping(raw, path)
    ptype = c.string(raw.get("type"), f"{path}.type", required=True)
    # `url` (a full endpoint URL, e.g. of an `http` provider) may stand in for base_url
    base_url = c.string(raw.get("base_url") or raw.get("url"), f"{path}.base_url", required=True)
    if base_url and not base_url.startswith(("http://", "https://")):
        c.fail(f"{path}.base_url", f"must start with http:// or https://, got {base_url!r}")
    keys, groups = _keys(c, raw, path)
    headers = c.mapping(raw.get("headers"), f"{path}.headers")
    if ptype is None or base_url is None:
        return None
    return ProviderConfig(
        name=name, type=ptype, base_url=base_url.rstrip("/"), api_keys=keys, key_groups=groups,
        timeouts=_timeouts(c, raw.get("timeouts"), f"{path}.timeouts"),
        retry=_retry(c, raw["retry"], f"{path}.retry", retry) if "retry" in raw else None,
        proxy=_proxy(c, raw.get("proxy"), f"{path}.proxy"),
        headers=tuple((str(k), str(v)) for k, v in headers.items()),
        options={k: v for k, v in raw.items() if k not in _PROVIDER_KEYS},
    )


def _model(c: _Checker, pattern: str, raw: Any, providers: dict[str, ProviderConfig],
           declared: set[str]) -> ModelConfig | None:
    path = f"models.{pattern}"
    if isinstance(raw, str):   # shorthand: `name: provider`
        raw = {"provider": raw}
    raw = c.mapping(raw, path)
    provider = c.string(raw.get("provider"), f"{path}.provider", required=True)
    if provider and provider not in declared:
        c.fail(f"{path}.provider", f"unknown provider {provider!r} "
               f"(declared: {', '.join(sorted(declared)) or 'none'})")
    filters = c.strings(raw.get("filters"), f"{path}.filters")
    fallbacks = c.strings(raw.get("fallbacks"), f"{path}.fallbacks")
    if provider is None:
        return None
    return ModelConfig(
        pattern=str(pattern), provider=provider,
        model=c.string(raw.get("model"), f"{path}.model"),
        max_tokens=c.number(raw.get("max_tokens"), f"{path}.max_tokens", None, integer=True,
                            minimum=1, allow_none=True),
        max_output_tokens=c.number(raw.get("max_output_tokens"), f"{path}.max_output_tokens",
                                   None, integer=True, minimum=1, allow_none=True),
        filters=filters, fallbacks=fallbacks,
        options={k: v for k, v in raw.items() if k not in _MODEL_KEYS},
    )


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Config:
    c = _Checker()
    for key in data:
        if key not in _TOP_KEYS:
            c.fail(key, f"unknown setting (known: {', '.join(sorted(_TOP_KEYS))})")
    server = _server(c, c.mapping(data.get("server"), "server"))
    auth_keys = _auth(c, c.mapping(data.get("auth"), "auth"))
    retry = _retry(c, data.get("retry"), "retry", RetryConfig())
    upstream_proxy = _proxy(c, data.get("upstream_proxy"), "upstream_proxy")
    raw_providers = c.mapping(data.get("providers"), "providers")
    providers: dict[str, ProviderConfig] = {}
    for name, raw in raw_providers.items():
        provider = _provider(c, str(name), raw, retry)
        if provider is not None:
            providers[str(name)] = provider
    declared = {str(n) for n in raw_providers}
    models: list[ModelConfig] = []
    raw_models = data.get("models")
    if isinstance(raw_models, list):   # also accept a list of {name: ..., provider: ...}
        raw_models = {str(m.get("name")): m for m in raw_models if isinstance(m, dict)}
    for pattern, raw in c.mapping(raw_models, "models").items():
        model = _model(c, str(pattern), raw, providers, declared)
        if model is not None:
            models.append(model)
    # exact names first, then globs in file order
    models.sort(key=lambda m: m.is_glob)
    default_model = c.string(data.get("default_model"), "default_model")
    if default_model and models and not any(m.pattern == default_model for m in models) \
            and not any(fnmatch.fnmatchcase(default_model, m.pattern) for m in models):
        c.fail("default_model", f"{default_model!r} matches no entry of models")
    for model in models:
        for name in model.fallbacks:
            if name == model.pattern or not any(m.pattern == name for m in models) and not any(
                    fnmatch.fnmatchcase(name, m.pattern) for m in models):
                c.fail(f"models.{model.pattern}.fallbacks", f"{name!r} is not another entry of "
                       "models")
    plugins_dir = c.string(data.get("plugins_dir"), "plugins_dir")
    if plugins_dir and not Path(plugins_dir).is_dir():
        c.fail("plugins_dir", f"{plugins_dir!r} is not a directory")
    cache = _cache(c, c.mapping(data.get("cache"), "cache"))
    redis = _redis(c, c.mapping(data.get("redis"), "redis"))
    admin = _admin(c, c.mapping(data.get("admin"), "admin"), auth_keys)
    logging_ = _logging(c, c.mapping(data.get("logging"), "logging"))
    logs = _logs(c, c.mapping(data.get("logs"), "logs"))
    metrics = _metrics(c, c.mapping(data.get("metrics"), "metrics"))
    if c.problems:
        raise ConfigError(c.problems)
    return Config(
        server=server, auth_keys=auth_keys, providers=providers, models=tuple(models),
        default_model=default_model,
        default_max_tokens=c.number(data.get("default_max_tokens"), "default_max_tokens", 4096,
                                    integer=True, minimum=1),
        cache=cache, redis=redis,
        plugins_dir=plugins_dir, plugins=c.mapping(data.get("plugins"), "plugins"), admin=admin,
        source=source, logging=logging_, logs=logs, metrics=metrics, retry=retry,
        upstream_proxy=upstream_proxy,
    )


# --- observability: logging, logs (request log store), metrics --------------------------------

def _known(c: _Checker, raw: dict[str, Any], section: str, known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            c.fail(f"{section}.{key}", f"unknown setting (known: {', '.join(sorted(known))})")


def _flag(c: _Checker, value: Any, path: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0", ""):
        return False
    c.fail(path, f"must be true or false, got {value!r}")
    return default


def _logging(c: _Checker, raw: dict[str, Any]) -> LoggingConfig:
    _known(c, raw, "logging", ("format", "access", "bodies", "body_max_bytes"))
    d = LoggingConfig()
    fmt = (c.string(raw.get("format"), "logging.format") or d.format).lower()
    if fmt not in ("text", "json"):
        c.fail("logging.format", f"must be text or json, got {fmt!r}")
        fmt = d.format
    return LoggingConfig(
        format=fmt, access=_flag(c, raw.get("access"), "logging.access", d.access),
        bodies=_flag(c, raw.get("bodies"), "logging.bodies", d.bodies),
        body_max_bytes=c.number(raw.get("body_max_bytes"), "logging.body_max_bytes",
                                d.body_max_bytes, integer=True, minimum=0))


def _logs(c: _Checker, raw: dict[str, Any]) -> LogsConfig:
    _known(c, raw, "logs", ("enabled", "database_url", "table", "retention_days", "max_rows",
                            "batch_rows", "flush_secs", "queue_max"))
    d = LogsConfig()
    url = c.string(raw.get("database_url"), "logs.database_url")
    if url and not url.startswith(("sqlite://", "postgresql://", "postgres://")):
        c.fail("logs.database_url", "must start with sqlite:/// or postgresql://, got "
               f"{url.split('://')[0]}://...")
    table = c.string(raw.get("table"), "logs.table") or d.table
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$", table):
        c.fail("logs.table", f"must be a plain SQL identifier, got {table!r}")
    return LogsConfig(
        enabled=_flag(c, raw.get("enabled"), "logs.enabled", d.enabled),
        database_url=url, table=table,
        retention_days=c.number(raw.get("retention_days"), "logs.retention_days",
                                d.retention_days),
        max_rows=c.number(raw.get("max_rows"), "logs.max_rows", d.max_rows, integer=True),
        batch_rows=c.number(raw.get("batch_rows"), "logs.batch_rows", d.batch_rows,
                            integer=True, minimum=1),
        flush_secs=c.number(raw.get("flush_secs"), "logs.flush_secs", d.flush_secs,
                            minimum=0.01),
        queue_max=c.number(raw.get("queue_max"), "logs.queue_max", d.queue_max, integer=True,
                           minimum=1))


def _metrics(c: _Checker, raw: dict[str, Any]) -> MetricsConfig:
    _known(c, raw, "metrics", ("enabled", "key"))
    return MetricsConfig(enabled=_flag(c, raw.get("enabled"), "metrics.enabled", True),
                         key=c.string(raw.get("key"), "metrics.key"))
