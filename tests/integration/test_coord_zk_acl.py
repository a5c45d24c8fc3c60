"""ZooKeeper ACLs: a cluster with ``zk_auth`` is closed to everyone else.

Attacks: an anonymous client and a client with the wrong password read,
write, create and delete every znode of the tree; a node with the wrong
password tries to join; a tree created open (before auth) is offered to an
authenticated node. Each attack must fail.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from coord_helpers import take, wait_for
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NotEmptyError
from kazoo.security import make_digest_acl

import coord
from coord.observer import ClusterView

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
AUTH = "digest:skymesh-test:correct horse battery"
WRONG = "digest:skymesh-test:wrong password"


def _kazoo(hosts: str, auth: str | None = None) -> KazooClient:
    data = None if auth is None else [("digest", auth.removeprefix("digest:"))]
    zk = KazooClient(hosts=hosts, timeout=10, auth_data=data)
    zk.start(15)
    return zk


@pytest.fixture
def secured(servers: dict[str, str], cluster: str) -> Iterator[list[Any]]:
    """Coordinators made in the test; stopped, then the tree deleted with the identity."""
    made: list[Any] = []
    yield made
    for c in made:
        c.stop()
    zk = _kazoo(servers["zk"], AUTH)
    try:
        zk.delete(f"/skymesh/{cluster}", recursive=True)
    finally:
        zk.stop()
        zk.close()


def _start(made: list[Any], servers: dict[str, str], cluster: str, auth: str, nid: int) -> Any:
    c = coord.connect(servers["zk"], None, cluster, session_timeout=4.0, zk_auth=auth)
    made.append(c)
    c.start(nid, "localhost", os.getpid(), {"harbor": "tcp://127.0.0.1:1"})
    return c


def _walk(zk: KazooClient, path: str) -> list[str]:
    out = [path]
    for child in zk.get_children(path):
        out.extend(_walk(zk, f"{path}/{child}"))
    return out


def test_anonymous_and_wrong_password_clients_cannot_touch_the_tree(servers, cluster, secured):
    a = _start(secured, servers, cluster, AUTH, 1)
    b = _start(secured, servers, cluster, AUTH, 2)
    a.register_name("svc", 0x100)
    b.join_group("workers", 0x200)
    a.config_set("motd", {"text": "hi"})
    _, w = take(b, "res", "zk")
    held = w.wait()
    assert held.valid
    wait_for(lambda: a.is_master() or b.is_master(), what="a master")

    owner = _kazoo(servers["zk"], AUTH)
    try:
        root = f"/skymesh/{cluster}"
        tree = _walk(owner, root)
    finally:
        owner.stop()
        owner.close()
    # Every part of the tree is there: members, names, groups, config, election, locks.
    for part in ("nodes/1", "nodes/2", "names/svc", "groups/workers", "config/motd", "locks/res"):
        assert any(p.startswith(f"{root}/{part}") for p in tree), part
    assert any(p.startswith(f"{root}/election/") for p in tree)
    assert any(p.startswith(f"{root}/locks/res/") for p in tree)  # the held lock's znode

    for who in (None, WRONG):
        zk = _kazoo(servers["zk"], who)
        try:
            for path in tree:
                with pytest.raises(NoAuthError):
                    zk.get(path)
                with pytest.raises(NoAuthError):
                    zk.get_children(path)
                with pytest.raises(NoAuthError):
                    zk.get_acls(path)
                with pytest.raises(NoAuthError):
                    zk.set(path, b"forged")
                with pytest.raises(NoAuthError):
                    zk.create(f"{path}/intruder", b"x")
                if path != root:
                    with pytest.raises(NoAuthError):
                        zk.delete(path)
        finally:
            zk.stop()
            zk.close()
    # A fake node cannot join and a name cannot be forged: the attacks above left no trace.
    assert sorted(a.members()) == [1, 2]
    assert a.query_name("svc") == 0x100
    assert held.valid


def test_every_znode_carries_the_cluster_acl(servers, cluster, secured):
    a = _start(secured, servers, cluster, AUTH, 1)
    a.register_name("svc", 0x100)
    a.config_set("k", 1)
    a.join_group("g", 0x100)
    user, _, password = AUTH.removeprefix("digest:").partition(":")
    want = [make_digest_acl(user, password, all=True)]
    owner = _kazoo(servers["zk"], AUTH)
    try:
        for path in _walk(owner, f"/skymesh/{cluster}"):
            assert owner.get_acls(path)[0] == want, path
    finally:
        owner.stop()
        owner.close()


def test_anonymous_reads_are_refused_per_call(servers, cluster, secured):
    """The per-path walk above, spelled out for get on every part (no blanket except)."""
    a = _start(secured, servers, cluster, AUTH, 1)
    a.register_name("svc", 0x100)
    a.config_set("k", 1)
    zk = _kazoo(servers["zk"])
    try:
        for part in ("", "/nodes", "/nodes/1", "/names/svc", "/config/k", "/election", "/locks"):
            with pytest.raises(NoAuthError):
                zk.get(f"/skymesh/{cluster}{part}")
            with pytest.raises(NoAuthError):
                zk.get_acls(f"/skymesh/{cluster}{part}")
        with pytest.raises(NoAuthError):
            zk.create(f"/skymesh/{cluster}/nodes/99", b"{}", ephemeral=True)
        with pytest.raises(NoAuthError):
            zk.create(f"/skymesh/{cluster}/config/@unique:evil", b"{}")
        with pytest.raises(NoAuthError):
            zk.delete(f"/skymesh/{cluster}/nodes/1")
    finally:
        zk.stop()
        zk.close()


def test_wrong_password_fails_to_join_with_a_clear_error(servers, cluster, secured):
    _start(secured, servers, cluster, AUTH, 1)
    with pytest.raises(coord.CoordAuthError, match="denied access") as info:
        _start(secured, servers, cluster, WRONG, 2)
    assert "wrong password" not in str(info.value)
    c = coord.connect(servers["zk"], None, cluster)  # no credentials at all
    secured.append(c)
    with pytest.raises(coord.CoordAuthError, match="denied access"):
        c.start(3, "localhost", 1, {})


def test_node_cli_with_wrong_password_prints_one_line(servers, cluster, secured):
    _start(secured, servers, cluster, AUTH, 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        SKYMESH_ZK_HOSTS=servers["zk"],
        SKYMESH_CLUSTER=cluster,
        SKYMESH_NODE_ID="2",
        SKYMESH_ZK_AUTH=WRONG,
    )
    p = subprocess.run(
        [sys.executable, "-m", "node.cli", "node"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "cannot join cluster" in lines[0] and "denied access" in lines[0]
    assert "wrong password" not in p.stdout + p.stderr


def test_open_tree_from_before_auth_is_refused(servers, cluster, secured):
    c = coord.connect(servers["zk"], None, cluster)  # made open, as before zk_auth existed
    c.start(1, "localhost", 1, {})
    c.stop()
    with pytest.raises(coord.CoordAuthError, match="world:anyone"):
        _start(secured, servers, cluster, AUTH, 2)
    zk = _kazoo(servers["zk"])  # open tree: the cluster fixture cannot clean it as owner
    try:
        zk.delete(f"/skymesh/{cluster}", recursive=True)
    finally:
        zk.stop()
        zk.close()


def test_cluster_view_and_cli_authenticate(servers, cluster, secured):
    a = _start(secured, servers, cluster, AUTH, 1)
    a.config_set("motd", "hi")
    with ClusterView(servers["zk"], cluster, auth=AUTH) as view:
        assert list(view.members()) == [1]
        view.config_set("added", 2)  # created by the view: the cluster ACL too
    wait_for(lambda: a.config_get("added") == 2, what="config from the view")
    with pytest.raises(coord.CoordAuthError), ClusterView(servers["zk"], cluster) as view:
        view.members()
    with pytest.raises(coord.CoordAuthError), ClusterView(servers["zk"], cluster) as view:
        view.config_set("evil", 1)

    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update(PYTHONPATH=str(ROOT), SKYMESH_ZK_HOSTS=servers["zk"], SKYMESH_CLUSTER=cluster)

    def cli(*args: str, auth: str | None) -> subprocess.CompletedProcess[str]:
        extra = {} if auth is None else {"SKYMESH_ZK_AUTH": auth}
        return subprocess.run(
            [sys.executable, "-m", "node.cli", *args],
            env={**env, **extra},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = cli("config", "get", "motd", auth=AUTH)
    assert ok.returncode == 0 and ok.stdout.strip() == '"hi"', ok.stderr
    assert cli("health", auth=AUTH).returncode == 0
    denied = cli("config", "get", "motd", auth=None)
    assert denied.returncode == 1 and "denied access" in denied.stderr
    denied = cli("health", auth=WRONG)
    assert denied.returncode == 1 and "denied access" in denied.stderr
    status = cli("status", auth=None)
    assert status.returncode != 0 and "denied access" in status.stderr


def test_shared_parent_lets_other_clusters_in_but_not_into_this_one(servers, cluster):
    """In a fresh chroot the secured cluster creates ``/skymesh`` itself."""
    chroot = f"/{cluster}-chroot"
    admin = _kazoo(servers["zk"])
    admin.create(chroot)
    hosts = servers["zk"] + chroot
    made: list[Any] = []
    try:
        secured = coord.connect(hosts, None, "sec", 4.0, zk_auth=AUTH)
        made.append(secured)
        secured.start(1, "localhost", 1, {})
        open_one = coord.connect(hosts, None, "open", 4.0)  # another cluster, no identity
        made.append(open_one)
        open_one.start(1, "localhost", 1, {})
        assert list(open_one.members()) == [1]
        zk = _kazoo(hosts)
        try:
            with pytest.raises(NoAuthError):
                zk.get_children("/skymesh")  # cluster names are not listed to strangers
            with pytest.raises(NotEmptyError):
                zk.delete("/skymesh/sec")  # a live cluster root cannot be removed
            with pytest.raises(NoAuthError):
                zk.get("/skymesh/sec/nodes/1")
            zk.create("/skymesh/squat")  # an empty root can be made and removed ...
            zk.delete("/skymesh/squat")
        finally:
            zk.stop()
            zk.close()
        assert list(secured.members()) == [1]
    finally:
        for c in made:
            c.stop()
        owner = _kazoo(servers["zk"], AUTH)
        try:
            owner.delete(chroot, recursive=True)
        finally:
            owner.stop()
            owner.close()
        admin.stop()
        admin.close()


def test_squatted_root_is_refused(servers, cluster):
    """Someone made our cluster root first, open to all: the node refuses to use it."""
    zk = _kazoo(servers["zk"])
    try:
        zk.ensure_path(f"/skymesh/{cluster}")
        c = coord.connect(servers["zk"], None, cluster, 4.0, zk_auth=AUTH)
        try:
            with pytest.raises(coord.CoordAuthError, match=f"/skymesh/{cluster} has ACL world"):
                c.start(1, "localhost", 1, {})
        finally:
            c.stop()
    finally:
        zk.delete(f"/skymesh/{cluster}", recursive=True)
        zk.stop()
        zk.close()
