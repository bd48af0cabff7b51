"""Plugin discovery and the start-up registries built from the hooks.

Load order: the bundled defaults (`DEFAULT_PLUGINS`), then `*.py` files in `plugins_dir`, then
the setuptools entry-point group `p5proxy` (limited by P5PROXY_LOAD_PLUGINS=a,b; empty: none).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pluggy

from . import hookspecs
from .config import Config
from .errors import PluginError

__all__ = ["DEFAULT_PLUGINS", "make_plugin_manager", "Registry", "build_registry", "describe_plugins"]

DEFAULT_PLUGINS = (
    "p5proxy.default_plugins.config_router",
    "p5proxy_plugins.provider_openai",
    "p5proxy_plugins.provider_anthropic",
    "p5proxy_plugins.provider_http",
    "p5proxy_plugins.filter_tool_emulation",
    "p5proxy_plugins.filter_think_tags",
    "p5proxy_plugins.filter_strip",
    "p5proxy_plugins.cache_response",
)


def _load_file(path: Path) -> ModuleType:
    name = f"p5proxy_local_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot load plugin file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise PluginError(f"plugin file {path} failed to import: {exc!r}") from exc
    return module


def _register(pm: pluggy.PluginManager, plugin: ModuleType, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except ValueError as exc:   # e.g. a misspelt hook with the p5proxy_ prefix
        raise PluginError(f"plugin {name!r} cannot be registered: {exc}") from exc


def make_plugin_manager(config: Config, *, entry_point_plugins: bool = True) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        _register(pm, importlib.import_module(module_name), module_name)
    if config.plugins_dir:
        for path in sorted(Path(config.plugins_dir).glob("*.py")):
            if not path.name.startswith("_"):
                _register(pm, _load_file(path), str(path))
    if entry_point_plugins:
        wanted = os.environ.get("P5PROXY_LOAD_PLUGINS")
        if wanted is not None:
            allowed = {n.strip() for n in wanted.split(",") if n.strip()}
            for ep in entry_points(group=hookspecs.PROJECT):
                if ep.name not in allowed:
                    pm.set_blocked(ep.name)
        try:   # pluggy's loader records each plugin's distribution for `p5proxy plugins`
            pm.load_setuptools_entrypoints(hookspecs.PROJECT)
        except Exception as exc:
            raise PluginError(f"an entry-point plugin failed to load: {exc!r}") from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} — hooks must be spelt like those in p5proxy.hookspecs") from exc
    return pm


@dataclass
class Registry:
    """What the hooks registered: provider factories by type, filter factories by name."""
    providers: dict[str, Callable[..., Any]] = field(default_factory=dict)
    filters: dict[str, Callable[..., Any]] = field(default_factory=dict)


def build_registry(pm: pluggy.PluginManager, config: Config) -> Registry:
    reg = Registry()

    def adder(table: dict[str, Callable[..., Any]], what: str) -> Callable[[str, Callable[..., Any]], None]:
        def register(name: str, factory: Callable[..., Any]) -> None:
            if not callable(factory):
                raise PluginError(f"{what} {name!r}: factory is not callable")
            # pluggy calls later-loaded plugins first and trylast defaults last: first one wins
            table.setdefault(name, factory)
        return register

    pm.hook.p5proxy_register_providers(register=adder(reg.providers, "provider type"), config=config)
    pm.hook.p5proxy_register_filters(register=adder(reg.filters, "filter"), config=config)
    return reg


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    out = []
    for name, plugin in pm.list_name_plugin():
        dist = dict(pm.list_plugin_distinfo()).get(plugin)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append({"name": name, "version": getattr(dist, "version", None) if dist else None,
                    "hooks": hooks})
    return out
