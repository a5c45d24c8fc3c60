"""Operator subcommands of the ``skymesh`` CLI (status, call, console, config, health)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_commands(sub: Any) -> None:
    """Add the operator subcommands to the ``skymesh`` parser's subparsers."""
    h = sub.add_parser("health", help="exit 0 when this node is a live cluster member")
    h.add_argument("--config", "-c", help="the node's TOML config (SKYMESH_* apply)")
    h.add_argument("--timeout", type=float, default=5.0)


def run(args: argparse.Namespace) -> int:
    """Run an operator subcommand; returns the exit status."""
    if args.command == "health":
        return _health(args)
    print(f"skymesh: unknown command {args.command}", file=sys.stderr)
    return 2


def _health(args: argparse.Namespace) -> int:
    import coord
    from coord.errors import CoordError

    from .config import load_config
    from .errors import ConfigError

    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"skymesh: config error: {exc}", file=sys.stderr)
        return 2
    if cfg.zk_hosts is None:
        print("standalone node: nothing to check in the cluster")
        return 0
    c = coord.connect(cfg.zk_hosts, None, cfg.cluster, session_timeout=max(args.timeout, 2.0))
    try:
        members = c.peek_members() if hasattr(c, "peek_members") else None
        if members is None:
            print("skymesh: this coord backend cannot list members from outside", file=sys.stderr)
            return 1
    except CoordError as exc:
        print(f"skymesh: unhealthy: {exc}", file=sys.stderr)
        return 1
    finally:
        c.stop()
    if cfg.node_id is not None and cfg.node_id not in members:
        print(f"skymesh: node {cfg.node_id} is not a member of {cfg.cluster}", file=sys.stderr)
        return 1
    print(f"ok: {len(members)} node(s) in {cfg.cluster}")
    return 0
