"""Cluster subcommands of the ``skymesh`` CLI: ``health`` and ``config get|set|list``.

Both read ZooKeeper from outside (``coord.observer.ClusterView``) with the
node settings from ``--config`` and ``SKYMESH_*``; neither joins the cluster.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any


def add_commands(sub: Any) -> None:
    """Add ``health`` and ``config`` to the ``skymesh`` subparsers."""
    h = sub.add_parser("health", help="exit 0 when this node works (console) and is a member")
    h.add_argument("--config", "-c", help="the node's TOML config (SKYMESH_* apply)")
    h.add_argument("--timeout", type=float, default=5.0)
    c = sub.add_parser("config", help="read or change cluster config (watched by services)")
    c.add_argument("--config", "-c", dest="config_file", help="a node TOML for zk_hosts/cluster")
    c.add_argument("action", choices=["get", "set", "list"])
    c.add_argument("key", nargs="?")
    c.add_argument("value", nargs="?", help="a JSON value (a bare word is taken as a string)")


LocalHealth = Callable[[Any, float], "str | None"]
"""``(config, timeout) -> None if the node's console said ok, else why not`` (ops.py's)."""


def run(args: argparse.Namespace, local_health: LocalHealth | None = None) -> int | None:
    """Run ``health`` or ``config``; None if the command is not one of these.

    ``local_health`` asks the node's own console (the CLI's console client lives in
    ``ops``, which imports this module, so it is passed in rather than imported).
    """
    if args.command == "health":
        return _health(args, local_health)
    if args.command == "config":
        return _config(args)
    return None


def _view(config_file: str | None, timeout: float = 5.0) -> tuple[Any, Any] | int:
    from coord.observer import ClusterView

    from ..config import load_config
    from ..errors import ConfigError

    try:
        cfg = load_config(config_file)
    except ConfigError as exc:
        print(f"skymesh: config error: {exc}", file=sys.stderr)
        return 2
    if cfg.zk_hosts is None:
        print("skymesh: no zk_hosts configured (SKYMESH_ZK_HOSTS): nothing to read",
              file=sys.stderr)
        return 2
    opts = cfg.coord_options()  # the node's own ZooKeeper identity and TLS
    return cfg, ClusterView(cfg.zk_hosts, cfg.cluster, auth=opts["zk_auth"], tls=opts["zk_tls"],
                            timeout=timeout)


def _health(args: argparse.Namespace, local_health: LocalHealth | None) -> int:
    """Exit 0 only if the node itself works and is a member.

    With a ``console_port`` the local console runs ``health`` (coordination
    session CONNECTED, ``.launcher`` answers, the harbor loop turns:
    see ``node/builtins/health.py``); a node that does not answer within
    ``--timeout`` is unhealthy. With ZooKeeper, the node must also be listed in
    the cluster's membership.
    """
    import time

    from ..config import load_config
    from ..errors import ConfigError

    deadline = time.monotonic() + args.timeout
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"skymesh: config error: {exc}", file=sys.stderr)
        return 2
    local = "no console_port: harbor and workers not checked"
    if cfg.console_port is not None and local_health is not None:
        problem = local_health(cfg, args.timeout)
        if problem is not None:
            print(f"skymesh: unhealthy: {problem}", file=sys.stderr)
            return 1
        local = "harbor, workers and coordination answer"
    if cfg.zk_hosts is None:
        print(f"ok: standalone node; {local}")
        return 0
    return _membership(args.config, cfg, max(deadline - time.monotonic(), 0.5), local)


def _membership(config_file: str | None, cfg: Any, timeout: float, local: str) -> int:
    from coord.errors import CoordError

    made = _view(config_file, timeout)
    if isinstance(made, int):
        return made
    _, view = made
    try:
        with view:
            members = view.members()
    except CoordError as exc:
        print(f"skymesh: unhealthy: {exc}", file=sys.stderr)
        return 1
    if cfg.node_id is not None and cfg.node_id not in members:
        print(f"skymesh: node {cfg.node_id} is not a member of {cfg.cluster}", file=sys.stderr)
        return 1
    print(f"ok: {len(members)} node(s) in {cfg.cluster}; {local}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from coord.errors import CoordError

    made = _view(args.config_file)
    if isinstance(made, int):
        return made
    _, view = made
    try:
        with view:
            if args.action == "list":
                print(json.dumps(view.config_list(), indent=2, sort_keys=True))
            elif args.key is None:
                print("skymesh: config get|set needs a key", file=sys.stderr)
                return 2
            elif args.action == "get":
                print(json.dumps(view.config_get(args.key)))
            else:
                if args.value is None:
                    print("skymesh: config set needs a value", file=sys.stderr)
                    return 2
                try:
                    value = json.loads(args.value)
                except ValueError:
                    value = args.value
                view.config_set(args.key, value)
    except (CoordError, ValueError) as exc:
        print(f"skymesh: {exc}", file=sys.stderr)
        return 1
    return 0
