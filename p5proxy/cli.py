"""Command line: `p5proxy serve | plugins | check-config | hash-key` (also `python -m p5proxy`)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile


from . import __version__
from .config import Config, load_config
from .loghandler import configure as configure_logging
from .errors import ConfigError, PluginError

__all__ = ["main"]


def _load(path: str | None) -> Config:
    return load_config(path)


def _multiprocess_metrics(workers: int) -> str | None:
    """With several workers, /metrics adds up all of them: prometheus-client's multiprocess
    mode, in a private directory made before prometheus-client is imported (removed at exit).
    A PROMETHEUS_MULTIPROC_DIR set by the operator is used as it is."""
    if workers <= 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR") \
            or "prometheus_client" in sys.modules:
        return None
    directory = tempfile.mkdtemp(prefix="p5proxy-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    return directory


def _serve(args: argparse.Namespace) -> int:
    metrics_dir = _multiprocess_metrics(args.workers)
    try:
        return _serve_config(args)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _serve_config(args: argparse.Namespace) -> int:
    from .accesslog import setup_logging
    from .app import create_app
    from .server import serve

    config = _load(args.config)
    setup_logging(config.logging)
    server = config.server
    if args.host:
        server = dataclasses.replace(server, host=args.host)
    if args.port is not None:
        server = dataclasses.replace(server, port=args.port)
    if args.grace is not None:
        server = dataclasses.replace(server, grace_secs=args.grace)
    config = dataclasses.replace(config, server=server)
    create_app(config)   # fail now, in the parent, on configuration or plugin problems
    print(f"p5proxy {__version__} listening on http://{server.host}:{server.port} "
          f"(config: {config.source}, providers: {', '.join(config.providers) or 'none'}, "
          f"workers: {args.workers})", flush=True)
    return serve(lambda: create_app(config), server.host, server.port, workers=args.workers,
                 access_log=args.access_log, grace=server.grace_secs)


def _plugins(args: argparse.Namespace) -> int:
    from .plugins import build_registry, describe_plugins, make_plugin_manager

    config = _load(args.config)
    pm = make_plugin_manager(config)
    registry = build_registry(pm, config)
    for plugin in describe_plugins(pm):
        version = f" {plugin['version']}" if plugin["version"] else ""
        print(f"{plugin['name']}{version}: {', '.join(plugin['hooks']) or '(no hooks)'}")
    print(f"provider types: {', '.join(sorted(registry.providers))}")
    print(f"filters: {', '.join(sorted(registry.filters)) or '(none)'}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    from .app import create_app

    config = _load(args.config)
    create_app(config)   # also resolves provider types and filters
    print(f"{config.source}: OK ({len(config.providers)} providers, {len(config.models)} models)")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    """Print the SHA-256 of a client key read from standard input (one line; the line end is
    not part of the key), for `auth.keys: [{key_sha256: ...}]`."""
    from .clientkeys import hash_key

    key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        print("hash-key: no key on standard input (an empty key never matches)", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="p5proxy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"p5proxy {__version__}")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML configuration file (default: $P5PROXY_CONFIG or "
                                        "embedded defaults)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes sharing the port (SO_REUSEPORT); default 1")
    serve.add_argument("--grace", type=float,
                       help="seconds in-flight requests get to finish on SIGTERM/SIGINT "
                            "(server.grace_secs, default 30)")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument("--log-level", default="INFO")
    for name, help_text in (("plugins", "list loaded plugins and their hooks"),
                            ("check-config", "validate a configuration file")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config")
        p.add_argument("--log-level", default="WARNING")
    hk = sub.add_parser("hash-key", help="print the SHA-256 of a client key read from stdin "
                                         "(for auth.keys[].key_sha256)")
    hk.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_logging(args.log_level.upper())
    handler = {"serve": _serve, "plugins": _plugins, "check-config": _check_config,
               "hash-key": _hash_key}[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        source = args.config or os.environ.get("P5PROXY_CONFIG") or "<defaults>"
        print(f"configuration error in {source}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except PluginError as exc:
        print(f"plugin error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
