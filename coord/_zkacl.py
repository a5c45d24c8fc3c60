"""The cluster's ZooKeeper tree under an ACL: create it, and refuse one others can use.

Invariant (with auth): every znode under ``/skymesh/<cluster>`` carries exactly
the cluster identity's ACL. kazoo's ``default_acl`` gives it to every znode
skymesh creates; :func:`ensure_tree` checks the root and its directories at
start, so a tree made before auth was set (``world:anyone``) or squatted by
someone else is refused, never silently trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kazoo.security import ACL, Permissions, make_acl

from coord.errors import CoordAuthError
from coord.security import ZkAuth

__all__ = ["ensure_tree"]

PARENT = "/skymesh"


def _describe(acls: Iterable[ACL]) -> str:
    """An ACL list for a message, without digest hashes: ``world:anyone=ALL``."""
    return ", ".join(
        f"{a.id.scheme}:{a.id.id.partition(':')[0]}="
        f"{'ALL' if a.perms == Permissions.ALL else a.perms}"
        for a in acls
    )


def ensure_tree(client: Any, root: str, dirs: Iterable[str], auth: ZkAuth | None) -> None:
    """Create ``root`` and ``root/<dir>`` for each of ``dirs``; kazoo errors pass through.

    With ``auth``, raises ``CoordAuthError`` when any of them has an ACL other
    than the cluster identity's.
    """
    paths = [root, *(f"{root}/{d}" for d in dirs)]
    if auth is None:
        for path in paths[1:]:
            client.ensure_path(path)
        return
    # The shared parent holds other clusters too: anyone may add or remove an
    # *empty* cluster root there (removing a root needs its children gone, and
    # only the identity may remove those), nothing else.
    parent_acl = [*auth.acl(), make_acl("world", "anyone", create=True, delete=True)]
    client.ensure_path(PARENT, acl=parent_acl)
    want = {(a.perms, a.id.scheme, a.id.id) for a in auth.acl()}
    for path in paths:
        client.ensure_path(path)
        acls, _ = client.get_acls(path)
        if {(a.perms, a.id.scheme, a.id.id) for a in acls} != want:
            raise CoordAuthError(
                f"{path} has ACL {_describe(acls)}, not this cluster's identity alone "
                "(created before zk_auth was set, or by someone else): "
                "delete the tree or set its ACL (zkCli: setAcl -R)"
            )
