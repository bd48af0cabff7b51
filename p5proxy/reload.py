"""Live reload: read the configuration file again and swap it in without a restart.

`SIGHUP` (see server.py; with `--workers` the supervisor forwards it to every worker) or the
admin page's reload button calls `reload_app`. The file is read and checked completely first;
only a configuration that loads, whose provider types and filters exist and whose providers
construct, replaces the running one (`GatewayState.swap`, one synchronous assignment: the hot
path takes no lock). A rejected file changes nothing; its problems are logged and kept for the
admin page.

Requests already running keep the `Route` (provider object, filters) they resolved, so a stream
in flight finishes on the configuration it started with. The upstream connection pool is not
replaced (its settings live under `server:`, which needs a restart); an old provider object that
holds resources of its own (an async `aclose()`) is closed once the streams that were open at
the swap have ended (or after `server.grace_secs`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .appkeys import STATE
from .config import Config, load_config
from .errors import ConfigError, PluginError
from .plugins import Registry, build_registry
from .routing import Router

if TYPE_CHECKING:
    from .app import GatewayState

__all__ = ["ReloadResult", "reload_app", "reload_state", "reload_everywhere", "NOT_RELOADED"]

log = logging.getLogger("p5proxy.reload")
HISTORY = 20   # reload results kept for the admin page
# Settings read once at start-up: a change is reported, and applied by a restart.
NOT_RELOADED = ("server", "plugins_dir", "logs", "redis", "cache")   # (sections a build lacks are skipped)
_CLI_SERVER_FIELDS = ("host", "port", "grace_secs")   # `serve` flags may override these


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    at: float                      # time.time() of the attempt
    trigger: str                   # "SIGHUP", "admin", ...
    source: str                    # the file read
    problems: tuple[str, ...] = ()  # why the file was rejected (each with its path)
    changes: tuple[str, ...] = ()   # what changed, and what needs a restart


def _source_path(config: Config) -> str | None:
    if config.source == "<defaults>":
        return None   # environment only: read the environment again
    if config.source.startswith("<"):
        raise ConfigError(f"the configuration came from {config.source}, not from a file: "
                          "nothing to reload")
    return config.source


def _names(items: Any) -> set[str]:
    return {str(i) for i in items}


def _diff(old: Config, new: Config, loaded: Config) -> list[str]:
    """What `new` changes; `loaded` is the file as read (settings that need a restart are
    kept from `old` in `new`)."""
    file_server = loaded.server
    changes = []
    for what, before, after in (
            ("providers", _names(old.providers), _names(new.providers)),
            ("models", _names(m.pattern for m in old.models), _names(m.pattern for m in new.models))):
        added, removed = sorted(after - before), sorted(before - after)
        if added:
            changes.append(f"{what} added: {', '.join(added)}")
        if removed:
            changes.append(f"{what} removed: {', '.join(removed)}")
    changed = sorted(n for n in _names(old.providers) & _names(new.providers)
                     if old.providers[n] != new.providers[n])
    if changed:
        changes.append(f"providers changed: {', '.join(changed)}")
    old_models = {m.pattern: m for m in old.models}
    changed = sorted(m.pattern for m in new.models
                     if m.pattern in old_models and old_models[m.pattern] != m)
    if changed:
        changes.append(f"models changed: {', '.join(changed)}")
    if old.auth_keys != new.auth_keys:
        changes.append(f"client keys: {len(old.auth_keys)} -> {len(new.auth_keys)}")
    if old.admin != new.admin:
        changes.append("admin settings changed")
    if old.default_model != new.default_model:
        changes.append(f"default_model: {old.default_model} -> {new.default_model}")
    server_changed = [f.name for f in dataclasses.fields(file_server)
                      if f.name not in _CLI_SERVER_FIELDS
                      and getattr(file_server, f.name) != getattr(old.server, f.name)]
    if server_changed:
        changes.append(f"server settings not applied (restart needed): {', '.join(server_changed)}")
    for name in NOT_RELOADED[1:]:
        if getattr(old, name, None) != getattr(loaded, name, None):
            changes.append(f"{name} not applied (restart needed)")
    return changes or ["no change"]


def _build(state: GatewayState, config: Config) -> tuple[Registry, Router]:
    """Everything a request uses, built from the new configuration with the running plugin
    manager. Raises ConfigError with every problem found."""
    try:
        registry = build_registry(state.pm, config)
        return registry, Router(config, state.pm, registry)
    except (ConfigError, PluginError):
        raise
    except Exception as exc:   # a provider or filter factory that fails on its settings
        raise ConfigError(f"building providers and filters failed: {exc!r}") from exc


async def _retire(router: Router, streams: set[asyncio.Task[Any]], grace: float) -> None:
    closers = [getattr(p, "aclose") for p in router.providers.values()
               if inspect.iscoroutinefunction(getattr(p, "aclose", None))]
    if not closers:
        return
    if streams:
        await asyncio.wait(streams, timeout=grace)
    for close in closers:
        try:
            await close()
        except Exception:
            log.exception("closing a replaced provider failed")


async def reload_state(state: GatewayState, *, trigger: str) -> ReloadResult:
    """Read the file again and swap it in; on any problem keep the running configuration."""
    async with state.reload_lock:
        old = state.config
        source = old.source
        try:
            path = _source_path(old)
            # the file (and the YAML parser) off the event loop
            loaded = await asyncio.to_thread(load_config, path)
            # the listen address, the pool, the request log store... stay (restart to change)
            config = dataclasses.replace(loaded, **{
                name: getattr(old, name) for name in NOT_RELOADED if hasattr(old, name)})
            registry, router = _build(state, config)
        except Exception as exc:   # ConfigError, PluginError, or a bug: never half-applied
            if not isinstance(exc, (ConfigError, PluginError)):
                log.exception("reload (%s) of %s failed unexpectedly", trigger, source)
            problems = tuple(exc.problems) if isinstance(exc, ConfigError) else (
                str(exc) if isinstance(exc, PluginError) else f"unexpected error: {exc!r}",)
            result = ReloadResult(False, time.time(), trigger, source, problems=problems)
            log.error("reload (%s) of %s rejected; the running configuration stays:\n  %s",
                      trigger, source, "\n  ".join(problems))
        else:
            changes = tuple(_diff(old, config, loaded))
            previous = state.swap(config, registry, router)
            state.background(_retire(previous, set(state.streams), old.server.grace_secs))
            result = ReloadResult(True, time.time(), trigger, source, changes=changes)
            log.info("configuration reloaded (%s) from %s: %s", trigger, source, "; ".join(changes))
        state.reloads.append(result)
        del state.reloads[:-HISTORY]
        return result


async def reload_app(app: web.Application, *, trigger: str) -> ReloadResult:
    return await reload_state(app[STATE], trigger=trigger)


def reload_everywhere(state: GatewayState) -> bool:
    """Under `--workers`, after this worker reloaded: ask the supervisor to send SIGHUP to every
    worker (this one reloads once more, harmlessly). False in a single process."""
    if state.supervisor_pid is None:
        return False
    try:
        os.kill(state.supervisor_pid, signal.SIGHUP)
    except OSError:
        return False
    return True
