"""Model name -> Route (provider object, upstream model, filters), remembered per name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pluggy

from .config import Config, ModelConfig
from .errors import ConfigError, UnknownModel, UpstreamError
from .plugins import Registry
from .provider import Provider, Route

__all__ = ["Router", "tool_mode", "TOOL_MODES", "EMULATION_FILTER"]

_CACHE_LIMIT = 4096   # distinct model names remembered; bounded against garbage names
TOOL_MODES = ("native", "emulate", "auto")
EMULATION_FILTER = "tool_emulation"   # registered by the bundled tool-emulation plugin


def _provider_filters(options: dict[str, Any]) -> list[str]:
    value = options.get("filters") or []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _row_problems(path: str, filters: Sequence[str], mode: Any, registry: Registry) -> list[str]:
    """What is wrong with the `filters:` and `tools:` of one provider or model row."""
    problems = [f"{path}.filters: unknown filter {name!r} "
                f"(available: {', '.join(sorted(registry.filters)) or 'none'})"
                for name in filters if name not in registry.filters]
    if mode is not None and mode not in TOOL_MODES:
        problems.append(f"{path}.tools: must be one of {', '.join(TOOL_MODES)}, got {mode!r}")
    return problems


def tool_mode(model: ModelConfig, provider: Provider) -> str:
    """`tools:` on the model, else on the provider, else the provider type's default."""
    return str(model.options.get("tools") or provider.config.options.get("tools")
               or provider.default_tools)


class Router:
    def __init__(self, config: Config, pm: pluggy.PluginManager, registry: Registry) -> None:
        self.config = config
        self._hook = pm.hook.p5proxy_resolve_route
        self.providers: dict[str, Provider] = {}
        problems = []
        for name, pconf in config.providers.items():
            factory = registry.providers.get(pconf.type)
            if factory is None:
                problems.append(f"providers.{name}.type: unknown provider type {pconf.type!r} "
                                f"(available: {', '.join(sorted(registry.providers))})")
                continue
            self.providers[name] = factory(pconf, config)
        for model in config.models:
            problems += _row_problems(f"models.{model.pattern}", model.filters,
                                      model.options.get("tools"), registry)
        for name, pconf in config.providers.items():
            problems += _row_problems(f"providers.{name}", _provider_filters(pconf.options),
                                      pconf.options.get("tools"), registry)
        if problems:
            raise ConfigError(problems)
        self._filters = {name: factory(config) for name, factory in registry.filters.items()}
        self._cache: dict[str, Route] = {}

    def resolve(self, model: str) -> Route:
        route = self._cache.get(model)
        if route is not None:
            return route
        entry: ModelConfig | None = self._hook(model=model, config=self.config)
        if entry is None or entry.provider not in self.providers:
            raise UnknownModel(self._unknown_message(model), param="model")
        upstream = entry.model or (model if entry.is_glob else entry.pattern)
        provider = self.providers[entry.provider]
        names = [*_provider_filters(provider.config.options), *entry.filters]
        if tool_mode(entry, provider) == "emulate" and EMULATION_FILTER in self._filters:
            names.insert(0, EMULATION_FILTER)
        route = Route(provider, upstream, entry, [self._filters[f] for f in names])
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[model] = route
        return route

    def tools_fallback(self, model: str, route: Route, err: UpstreamError) -> Route | None:
        """`tools: auto`: when the upstream rejects a request because of its tools (a 400 that
        names them), retry once with tool emulation and keep using it for this model name."""
        if tool_mode(route.model, route.provider) != "auto" or EMULATION_FILTER not in self._filters:
            return None
        if err.status != 400 or "tool" not in err.message.lower():
            return None
        emulated = Route(route.provider, route.upstream_model, route.model,
                         [self._filters[EMULATION_FILTER], *route.filters])
        if self.providers.get(route.provider.name) is route.provider:   # not a reloaded-away one
            self._cache[model] = emulated
        return emulated

    def _unknown_message(self, model: str) -> str:
        names = self.model_names()
        if not self.config.models:
            return (f"model {model!r} is not configured, and no upstream is: add a `providers:` "
                    "and a `models:` entry to the configuration file (p5proxy serve --config "
                    "FILE), or set OPENAI_BASE_URL/OPENAI_API_KEY or "
                    "ANTHROPIC_BASE_URL/ANTHROPIC_API_KEY")
        return (f"model {model!r} is not configured; available models: "
                f"{', '.join(names) or '(patterns only)'}. Add it under `models:` or set "
                "`default_model`.")

    def model_names(self) -> list[str]:
        return [m.pattern for m in self.config.models if not m.is_glob]

    def describe(self) -> dict[str, Any]:
        return {name: p.describe() for name, p in self.providers.items()}
