"""Packaging and deployment files: a non-editable install carries every bundled plugin,
start.sh creates its virtual environment and starts the gateway, .env.example lists exactly the
environment variables the code reads, Dockerfile and docker-compose.yml agree with the code.

Offline: installs use `--no-index` and no build isolation; the new environments find the
dependencies (aiohttp, ...) of this test environment through PYTHONPATH, never p5proxy itself
(the editable install is a .pth hook, which PYTHONPATH entries do not run).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest
import yaml

from p5proxy.compiled import compiled_modules, stale_modules
from p5proxy.config import DEFAULT_PORT
from p5proxy.plugins import DEFAULT_PLUGINS
from tests.processes import REPO, astop_pid, free_port, wait_http

SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "start.sh", "p5proxy",
           "plugins")
CODE_DIRS = ("p5proxy", "plugins")


def copy_checkout(dest: Path) -> Path:
    """The files a clean checkout has that an install needs (no .venv, caches, egg-info)."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", "build", "dist")
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


def offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("P5PROXY_", "PIP_", "VIRTUAL_ENV"))}
    # pure Python: the compiled build (setup.py) takes minutes, and the whole suite runs on it
    env.update(PYTHONPATH=sysconfig.get_paths()["purelib"], PIP_NO_INDEX="1",
               PIP_NO_BUILD_ISOLATION="0", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_FIND_LINKS="", PIP_EXTRA_INDEX_URL="", P5PROXY_PURE_PYTHON="1", **extra)
    return env


def bundled_modules() -> set[str]:
    return {f"p5proxy_plugins.{p.stem}" for p in (REPO / "plugins").glob("*.py")
            if not p.name.startswith("_")}


@pytest.mark.timeout(240)
def test_wheel_install_has_every_bundled_plugin(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    dist = tmp_path / "dist"
    env = offline_env()
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(dist), str(src)], env=env, capture_output=True, text=True,
                           timeout=180, check=False)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("p5proxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in bundled_modules():
        assert module.replace(".", "/") + ".py" in names, module
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=60)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                "-q", "--no-deps", str(wheel)], env=env, capture_output=True,
                               text=True, timeout=120, check=False)
    assert installed.returncode == 0, installed.stderr
    # run from outside the checkout, so that nothing but the installed package can be found
    listing = subprocess.run([str(venv / "bin" / "p5proxy"), "plugins"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
    assert listing.returncode == 0, listing.stderr
    listed = {line.split(":", 1)[0].split(" ", 1)[0] for line in listing.stdout.splitlines()}
    assert set(DEFAULT_PLUGINS) <= listed, listing.stdout
    where = subprocess.run([str(python), "-c", "import p5proxy, p5proxy_plugins; "
                            "print(p5proxy.__file__); print(p5proxy_plugins.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                           check=True).stdout.split()
    assert all(path.startswith(str(venv)) for path in where), where
    for module in bundled_modules():   # bundled but not loaded by default: still importable
        subprocess.run([str(python), "-c", f"import {module}"], cwd=tmp_path, env=env,
                       check=True, timeout=60)


@pytest.mark.timeout(300)
async def test_start_sh_creates_venv_then_starts(tmp_path: Path) -> None:
    checkout = copy_checkout(tmp_path / "checkout")
    port = free_port()
    # start.sh exports .env: the port comes from there
    (checkout / ".env").write_text(f"P5PROXY_PORT={port}\n")
    log = tmp_path / "start.log"
    for run in ("first", "second"):
        started = time.monotonic()
        with open(log, "w") as out:
            proc = subprocess.Popen(["sh", str(checkout / "start.sh"), "--host", "127.0.0.1"],
                                    cwd=tmp_path, stdout=out, env=offline_env(
                                        P5PROXY_DATA_DIR=str(tmp_path / "p5proxy-data")),
                                    stderr=subprocess.STDOUT)
        try:
            await wait_http(f"http://127.0.0.1:{port}/health", timeout=200, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{run} run of start.sh: {exc}\n{log.read_text()}")
        finally:
            await astop_pid(proc)   # exec: the script's PID is the gateway's
        assert proc.returncode == 0, log.read_text()
        text = log.read_text()
        assert ("first run" in text) == (run == "first"), text
        assert f"listening on http://127.0.0.1:{port}" in text
        assert (checkout / ".venv" / "bin" / "p5proxy").exists()
        assert time.monotonic() - started < 250


# --- environment variables ------------------------------------------------------------------

_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+_?$")   # glibc's MALLOC_..._ end in _


def _mentions_env(node: ast.AST) -> bool:
    return "env" in ast.unparse(node).lower()


def env_vars_read_by_code() -> set[str]:
    """Variables read in p5proxy/ and plugins/: `os.environ.get("X")`, `os.getenv("X")`,
    `env.get("X")`, `os.environ["X"]`, `env["X"]`, and names listed in a module-level table
    whose name contains ENV (e.g. `_ENV_SETTINGS = (("cache", "ttl", "RESPONSE_CACHE_TTL"),)`)."""
    found: set[str] = set()
    for folder in CODE_DIRS:
        for path in (REPO / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and node.args and isinstance(node.func,
                                                                           ast.Attribute):
                    arg = node.args[0]
                    if (node.func.attr in ("get", "getenv", "pop", "setdefault")
                            and _mentions_env(node.func.value)
                            and isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                        found.add(arg.value)
                elif isinstance(node, ast.Subscript) and _mentions_env(node.value):
                    key = node.slice
                    if isinstance(key, ast.Constant) and isinstance(key.value, str):
                        found.add(key.value)
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                    if any(isinstance(t, ast.Name) and "ENV" in t.id for t in targets) \
                            and node.value is not None:
                        found |= {c.value for c in ast.walk(node.value)
                                  if isinstance(c, ast.Constant) and isinstance(c.value, str)
                                  and _ENV_NAME.match(c.value)}
    return {name for name in found if _ENV_NAME.match(name)}


def env_example() -> dict[str, str]:
    """NAME -> default from `NAME=value` or commented `# NAME=value` lines."""
    entries = {}
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def test_env_example_lists_exactly_what_the_code_reads() -> None:
    read = env_vars_read_by_code()
    assert {"P5PROXY_CONFIG", "P5PROXY_PORT", "OPENAI_API_KEY"} <= read   # the scan works
    listed = set(env_example())
    assert read - listed == set(), "missing from .env.example"
    assert listed - read == set(), "in .env.example but not read by the code"


def test_env_example_defaults_match_the_code() -> None:
    listed = env_example()
    assert listed["P5PROXY_PORT"] == str(DEFAULT_PORT)
    from p5proxy.config import CacheConfig
    defaults = CacheConfig()
    for var, value in (("RESPONSE_CACHE_TTL_SECS", defaults.ttl_secs),
                       ("RESPONSE_CACHE_TOOL_TTL_SECS", defaults.tool_ttl_secs),
                       ("RESPONSE_CACHE_MAX_ENTRY_BYTES", defaults.max_entry_bytes)):
        if var in listed:
            assert float(listed[var]) == float(value), var
    if "RESPONSE_CACHE_ENABLED" in listed:
        assert listed["RESPONSE_CACHE_ENABLED"] == str(defaults.enabled).lower()


def test_env_example_is_sourceable_by_sh(tmp_path: Path) -> None:
    """start.sh sources .env with sh: a copy of the example with every line uncommented
    must parse, and leave the values as written."""
    lines = []
    for line in (REPO / ".env.example").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#\s*([A-Z][A-Z0-9_]*=.*)$", line)
        lines.append(match.group(1) if match else line)
    env_file = tmp_path / "env"
    env_file.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["sh", "-c", f'set -a; . "{env_file}"; echo "$P5PROXY_PORT"'],
                         capture_output=True, text=True, timeout=10, check=True)
    assert out.stdout.strip() == str(DEFAULT_PORT)


# --- Dockerfile and compose -------------------------------------------------------------------

def test_dockerfile_and_compose_agree_with_the_code() -> None:
    docker = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.1[1-9]-slim", docker, re.M)
    assert "COPY setup.py " in docker   # the compiled build
    assert re.search(r"^USER (?!root)\S+", docker, re.M)
    assert f"EXPOSE {DEFAULT_PORT}" in docker
    image_env = {name for block in re.findall(r"^ENV ((?:.*\\\n)*.*)$", docker, re.M)
                 for name in re.findall(r"([A-Z][A-Z0-9_]*)=", block)}
    assert "P5PROXY_DATA_DIR" in image_env
    assert {n for n in image_env if not n.startswith(("PYTHON", "PIP_"))} <= env_vars_read_by_code()
    health = re.search(r"^HEALTHCHECK .*?CMD (.*)$", docker, re.M | re.S)
    assert health and "/health" in health.group(1)
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", docker, re.M):
        for name in copied.split():
            assert (REPO / name).exists(), name
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    gateway, redis = compose["services"]["p5proxy"], compose["services"]["redis"]
    env = gateway["environment"]
    assert env["RESPONSE_CACHE_REDIS_URL"].startswith("redis://redis:6379")
    assert set(env) <= env_vars_read_by_code()
    assert any(v.endswith(":" + env["P5PROXY_CONFIG"] + ":ro") for v in gateway["volumes"])
    assert any(p.endswith(f":{DEFAULT_PORT}") for p in gateway["ports"])
    assert redis["image"].startswith("redis:")


def test_the_hot_path_runs_compiled_when_built_with_a_compiler() -> None:
    """CI builds with a C compiler: a compiled build that silently fell back to pure Python
    (setup.py warns and goes on) must not pass unnoticed there."""
    compiled = set(compiled_modules())
    if not compiled and not os.environ.get("P5PROXY_REQUIRE_COMPILED"):
        pytest.skip("pure-Python install (P5PROXY_PURE_PYTHON, or no compiler at build time)")
    listed = {path.removesuffix(".py").replace("/", ".") for path in setup_compiled_list()}
    assert compiled == listed
    assert not stale_modules()


def setup_compiled_list() -> list[str]:
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return [ast.literal_eval(e) for e in node.value.elts]   # type: ignore[attr-defined]
    raise AssertionError("setup.py has no COMPILED list")


def test_compiled_classes_derive_only_from_compiled_classes() -> None:
    """mypyc lays a compiled class out as a native type; derived from an interpreted class
    (aiohttp's StreamResponse, logging.Formatter) its instances corrupt memory: such a class
    in routes/chat.py crashed the gateway under load (general protection fault). Those live
    in modules that are not compiled (eventstream.py, jsonlog.py)."""
    modules = setup_compiled_list()
    native: set[str] = set()
    classes: list[tuple[str, str, list[str]]] = []
    for path in modules:
        for node in ast.walk(ast.parse((REPO / path).read_text())):
            if isinstance(node, ast.ClassDef):
                native.add(node.name)
                classes.append((path, node.name, [ast.unparse(b) for b in node.bases]))
    bad = [(path, name, base) for path, name, bases in classes for base in bases
           if base not in native and base != "Protocol"]   # typing.Protocol: no instances
    assert not bad, bad


def test_a_compiled_module_older_than_its_source_is_reported(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from p5proxy import compiled as module
    pkg = tmp_path / "p5proxy"
    (pkg / "sub").mkdir(parents=True)
    suffix = EXTENSION_SUFFIXES[0]
    for name, source_newer in (("fresh", False), ("sub/edited", True)):
        source, built = pkg / f"{name}.py", pkg / f"{name}{suffix}"
        source.write_text("")
        built.write_bytes(b"")
        older, newer = (built, source) if source_newer else (source, built)
        os.utime(older, (1_000_000, 1_000_000))
        os.utime(newer, (2_000_000, 2_000_000))
    (pkg / "lonely.so").write_bytes(b"")   # no source: not ours to judge
    monkeypatch.setattr(module, "_PACKAGE", pkg)
    assert module.compiled_modules() == ["p5proxy.fresh", "p5proxy.sub.edited"]
    assert module.stale_modules() == []   # installed (no setup.py beside it): times mean nothing
    (tmp_path / "setup.py").write_text("")   # a checkout, built in place
    assert module.stale_modules() == ["p5proxy.sub.edited"]
