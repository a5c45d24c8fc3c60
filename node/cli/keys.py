"""``skymesh keys init DIR``: write a cluster's credentials (CURVE keys, console token).

With ``--nodes 1,2,3`` each node gets its own key pair (a member cannot speak
as another; one node can be revoked by deleting ``public/node-<id>.key``);
without, one shared cluster key (works with ``node_id = auto``). Point every
node at the directory with ``keys_dir`` (``SKYMESH_KEYS_DIR``); the operator's
tools read the console token from it (``--token-file DIR/console.token``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_USAGE = 2


def add_commands(sub: Any) -> None:
    """Add ``keys`` to the ``skymesh`` subparsers."""
    k = sub.add_parser("keys", help="cluster credentials: keys init DIR [--nodes 1,2,3]")
    k.add_argument("action", choices=["init"])
    k.add_argument("dir", help="directory to write (created 0700; secrets 0600)")
    k.add_argument("--nodes", help="comma-separated node ids for per-node keys (default: shared)")
    k.add_argument("--force", action="store_true", help="overwrite an existing key set")


def run(args: argparse.Namespace) -> int | None:
    """Run ``keys``; None if the command is another one."""
    if args.command != "keys":
        return None
    from harbor.errors import CredentialsError
    from harbor.keys import generate

    try:
        ids = [int(x) for x in args.nodes.split(",") if x.strip()] if args.nodes else []
    except ValueError:
        print(f"skymesh: --nodes takes node ids like 1,2,3, not {args.nodes!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        root = generate(args.dir, ids, force=args.force)
    except CredentialsError as exc:
        print(f"skymesh: {exc}", file=sys.stderr)
        return EXIT_USAGE
    kind = f"per-node keys for {', '.join(map(str, ids))}" if ids else "one shared cluster key"
    print(f"wrote {kind}, an operator key and a console token to {root}")
    print(f"nodes: keys_dir = {str(root)!r} (SKYMESH_KEYS_DIR); console: {root}/console.token")
    return 0
