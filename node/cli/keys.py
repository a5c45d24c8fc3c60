"""``skymesh keys init DIR``: write a cluster's credentials (CURVE keys, console token,
the ZooKeeper identity and the Redis password).

With ``--nodes 1,2,3`` each node gets its own key pair (a member cannot speak
as another; one node can be revoked by deleting ``public/node-<id>.key``);
without, one shared cluster key (works with ``node_id = auto``). Point every
node at the directory with ``keys_dir`` (``SKYMESH_KEYS_DIR``); the operator's
tools read the console token from it (``--token-file DIR/console.token``).

It also writes ``zk_auth`` (``digest:skymesh:<random>``: the identity whose ACL
guards ``/skymesh/<cluster>``, for ``zk_auth_file``) and ``redis_password``
(for ``redis_password_file`` and the Redis server's ``requirepass``), 0600:
a Swarm stack (``deploy/stack.yml``) takes all of them as
secrets. The compose files generate their own in the ``init`` service.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
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
    for name, value in (("zk_auth", f"digest:skymesh:{secrets.token_urlsafe(32)}"),
                        ("redis_password", secrets.token_urlsafe(32))):
        _write_secret(Path(root) / name, value)
    kind = f"per-node keys for {', '.join(map(str, ids))}" if ids else "one shared cluster key"
    print(f"wrote {kind}, an operator key, a console token, zk_auth and redis_password "
          f"to {root}")
    print(f"nodes: keys_dir = {str(root)!r} (SKYMESH_KEYS_DIR); console: {root}/console.token")
    return 0


def _write_secret(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` 0600 (created so, never widened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)
