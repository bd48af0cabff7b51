"""The package is described in setup.cfg; this file adds its compiled build.

The modules on a request's hot path (decoding, translating and rendering both protocols, the
SSE decoder, the request record and access line, the middleware, the retry loop) are compiled
to C extensions with mypyc when the package is built. The gateway then spends an eighth to a
third less CPU per streamed or translated request (bench/README.md). The .py sources stay in
the package, and they are what runs when the compiled build is not made:

- `P5PROXY_PURE_PYTHON=1` at install time skips it;
- without a working C compiler (and Python's headers) the build warns and installs pure Python.

Rules for a compiled module: nothing monkeypatches it, and interpreted code does not subclass
its classes, except those marked `@mypyc_attr(allow_interpreted_subclasses=True)`. Keep plugin
base classes (provider.py, filters.py, response_cache.py) and modules with async generators
(mypyc cannot compile them) out of the list.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED = [
    "p5proxy/protocols/openai/decode.py",
    "p5proxy/protocols/openai/encode.py",
    "p5proxy/protocols/openai/parse.py",
    "p5proxy/protocols/openai/render.py",
    "p5proxy/protocols/anthropic/decode.py",
    "p5proxy/protocols/anthropic/encode.py",
    "p5proxy/protocols/anthropic/parse.py",
    "p5proxy/protocols/anthropic/render.py",
    "p5proxy/protocols/mapping.py",
    "p5proxy/protocols/blocks.py",
    "p5proxy/protocols/envelope.py",
    "p5proxy/protocols/_json.py",
    "p5proxy/protocols/_check.py",
    "p5proxy/rawjson.py",
    "p5proxy/sse.py",
    "p5proxy/aggregate.py",
    "p5proxy/tokens.py",
    "p5proxy/ids.py",
    "p5proxy/thinking.py",
    "p5proxy/toolxml.py",
    "p5proxy/toolprompt.py",
    "p5proxy/eventcodec.py",
    "p5proxy/replay.py",
    "p5proxy/cachekey.py",
    "p5proxy/accesslog.py",
    "p5proxy/record.py",
    "p5proxy/metrics.py",
    "p5proxy/middleware.py",
    "p5proxy/forwarded.py",
    "p5proxy/surfaces.py",
    "p5proxy/routing.py",
    "p5proxy/keypool.py",
    "p5proxy/deadlines.py",
    "p5proxy/http1.py",
    "p5proxy/upstream_calls.py",
    "p5proxy/attempts.py",
    "p5proxy/routes/chat.py",
]


def _say(message: str) -> None:
    print(f"p5proxy build: {message}", file=sys.stderr)


def _ext_modules() -> list[Any]:
    if os.environ.get("P5PROXY_PURE_PYTHON", "") not in ("", "0"):
        _say("P5PROXY_PURE_PYTHON is set: pure Python")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        _say("mypyc is not installed: pure Python")
        return []
    try:
        # The build environment holds mypy, not the runtime packages: their types are Any here.
        return list(mypycify(["--ignore-missing-imports", *COMPILED], opt_level="3",
                             debug_level="0"))
    except (Exception, SystemExit) as exc:   # noqa: BLE001 - mypyc reports and exits
        _say(f"mypyc could not translate the hot-path modules ({exc}): pure Python")
        return []


class OptionalBuildExt(build_ext):
    """The compiled modules are an optimisation: when they cannot be built (no compiler, no
    Python headers), the package is installed without any of them (a partial set would
    import a shared library that is not there)."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:   # noqa: BLE001 - distutils raises several kinds
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.remove(path)
            _say(f"compiling the hot-path modules failed ({exc}): pure Python")


setup(ext_modules=_ext_modules(), cmdclass={"build_ext": OptionalBuildExt})
