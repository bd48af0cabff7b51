"""p5proxy: one gateway for the Anthropic Messages and OpenAI Chat Completions APIs."""

from .hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["hookimpl", "Provider", "Filter", "FilterRun", "Route", "UpstreamRequest",
           "__version__"]


def __getattr__(name: str) -> object:
    # Lazy: plugins import `hookimpl` from here without pulling in the whole gateway.
    if name in ("Provider", "Route", "UpstreamRequest"):
        from . import provider
        return getattr(provider, name)
    if name in ("Filter", "FilterRun"):
        from . import filters
        return getattr(filters, name)
    raise AttributeError(name)
