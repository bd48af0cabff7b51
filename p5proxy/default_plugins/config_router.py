"""Default route resolution from the `models:` table: exact names, then globs in file order,
then `default_model`."""

from __future__ import annotations

import fnmatch

from ..config import Config, ModelConfig
from ..hookspecs import hookimpl

__all__ = ["p5proxy_resolve_route"]


@hookimpl(trylast=True)
def p5proxy_resolve_route(model: str, config: Config) -> ModelConfig | None:
    for entry in config.models:   # exact names sort first (see config_from_dict)
        if entry.pattern == model or entry.is_glob and fnmatch.fnmatchcase(model, entry.pattern):
            return entry
    if config.default_model and config.default_model != model:
        return p5proxy_resolve_route(config.default_model, config)
    return None
