"""The compiled build (setup.py compiles the hot-path modules with mypyc): which modules run
compiled, and which compiled modules are older than their source. Python imports a compiled
module in preference to its .py file, so an edit to the source does not run until the package
is built again (`pip install -e .`), or the compiled files are removed."""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

__all__ = ["compiled_modules", "stale_modules"]

_PACKAGE = Path(__file__).resolve().parent


def _pairs() -> list[tuple[Path, Path]]:
    """(compiled file, its .py source) for every compiled module of the package."""
    found: dict[Path, Path] = {}
    for path in _PACKAGE.rglob("*.so"):
        for suffix in EXTENSION_SUFFIXES:   # longest first: .cpython-311-x86_64-linux-gnu.so
            if path.name.endswith(suffix):
                source = path.with_name(path.name[:-len(suffix)] + ".py")
                if source.exists():
                    found.setdefault(source, path)
                break
    return [(compiled, source) for source, compiled in found.items()]


def _name(source: Path) -> str:
    return ".".join(source.relative_to(_PACKAGE.parent).with_suffix("").parts)


def compiled_modules() -> list[str]:
    """Dotted names of the modules that have a compiled file next to their source."""
    return sorted(_name(source) for _, source in _pairs())


def stale_modules() -> list[str]:
    """Compiled modules whose source changed after they were built, in a checkout (setup.py
    beside the package: an editable install, where sources get edited). An installed wheel
    is left alone: unpacking it gives its files whatever times it likes."""
    if not (_PACKAGE.parent / "setup.py").exists():
        return []
    return sorted(_name(source) for compiled, source in _pairs()
                  if source.stat().st_mtime > compiled.stat().st_mtime)
