"""The ``skymesh`` command line.

``skymesh node`` runs a node until SIGTERM or SIGINT, then stops every
service (``on_stop``) and joins every thread. A bad configuration prints one
``skymesh: config error: ...`` line and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from coord.errors import CoordError

from ..errors import ConfigError, ServiceStartError

EXIT_CONFIG = 2


def _arg(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skymesh",
        description="skymesh: a skynet-style actor framework for Python clusters.",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    n = sub.add_parser("node", help="run a node until interrupted")
    n.add_argument("--config", "-c", help="TOML config file (keys overridable by SKYMESH_<KEY>)")
    n.add_argument("--standalone", action="store_true",
                   help="ignore ZooKeeper/Redis settings: embedded coordination")
    n.add_argument("--workers", type=int, help="worker threads (default 2)")
    n.add_argument("--node-id", help="node id or 'auto'")
    n.add_argument("--service", nargs="+", action="append", metavar="ARG",
                   help="start 'module:Class' with optional JSON-or-string args; repeatable")
    n.add_argument("--app-dir", default=".", metavar="DIR",
                   help="put DIR first on sys.path before importing services (default: .)")
    from . import ops as cli_ops

    cli_ops.add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skymesh`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "node":
        return _run_node(args)
    if args.command is not None:
        from . import ops as cli_ops

        return cli_ops.run(args)
    _parser().print_help()
    return 0


def use_app_dir(app_dir: str) -> None:
    """Put ``app_dir`` (absolute) first on ``sys.path``, as uvicorn's ``--app-dir`` does.

    A console script's ``sys.path[0]`` is its bin directory, not the current
    directory, so ``--service examples.hello:Hello`` from a checkout would not
    import without this (``python -m`` gets the current directory already).
    """
    path = os.path.abspath(app_dir)
    if sys.path[:1] != [path]:
        sys.path.insert(0, path)


def _run_node(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..node import Node

    overrides: dict[str, Any] = {}
    try:
        cfg = load_config(args.config)
        if args.workers is not None:
            overrides["workers"] = args.workers
        if args.node_id is not None:
            overrides["node_id"] = args.node_id
        if args.standalone:
            overrides["zk_hosts"] = None
            overrides["redis_url"] = None
        if args.service:
            overrides["services"] = [
                {"class": s[0], "args": [_arg(a) for a in s[1:]]} for s in args.service
            ]
        if overrides:
            merged = {k: v for k, v in vars(cfg).items() if k != "services"}
            merged["services"] = [
                {"class": s.cls, "args": list(s.args), **({"name": s.name} if s.name else {})}
                for s in cfg.services
            ]
            merged.update(overrides)
            if merged.get("node_id") is None and "node_id" not in overrides:
                merged["node_id"] = "auto"
            cfg = load_config({k: v for k, v in merged.items() if v is not None}, env={})
    except ConfigError as exc:
        print(f"skymesh: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    use_app_dir(args.app_dir)
    raise_fd_limit()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        node = Node.from_config(cfg)
    except ConfigError as exc:  # keys_dir unusable, a harbor exposed without keys, ...
        print(f"skymesh: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ServiceStartError as exc:
        print(f"skymesh: a service failed to start: {exc}\n{exc.remote_traceback}", file=sys.stderr)
        return 1
    except CoordError as exc:  # NodeIdTaken, CoordUnavailable: one clear line
        print(f"skymesh: cannot join cluster {cfg.cluster!r}: {exc}", file=sys.stderr)
        return 1
    # SIGHUP re-reads keys_dir (a node key removed from public/ is cut off).
    signal.signal(signal.SIGHUP, lambda *_: node.reload_keys())
    node.log(0, "info", f"node {node.node_id} up: {len(node.services())} services")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        node.stop()
    return 0


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one; return the soft limit now.

    A clustered node holds about 10 descriptors per peer (docs/scale.md), so a
    soft limit of 1,024 (the default of most logins and systemd units) stops a
    cluster at about 100 nodes. Go's runtime does the same at start. A limit
    that cannot be raised is left as it is.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft
