"""Coordination caches and calls recovering from faults (issue 15), against a real ZooKeeper."""

from __future__ import annotations

import pytest
from coord_helpers import wait_for

pytestmark = pytest.mark.integration


def test_failed_name_refresh_is_retried_without_a_new_watch_event(make_coord, servers, cluster):
    # A foreign client makes one name unreadable to the coordinators (a digest ACL), so
    # every refresh of ``a``'s name cache fails after its watch fired. Opening the ACL
    # again fires no watch in ZooKeeper: only a retry of the failed refresh can bring
    # ``a`` up to date.
    from kazoo.client import KazooClient
    from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

    a, b = make_coord(), make_coord()
    zk = KazooClient(hosts=servers["zk"], timeout=10, auth_data=[("digest", "t:pw")])
    zk.start(15)
    try:
        path = f"/skymesh/{cluster}/names/locked"
        zk.create(path, b"5", acl=[make_digest_acl("t", "pw", all=True)])
        b.register_name("svc", 9)
        retry = a._names.names_dir.retry  # noqa: SLF001 - the test checks the failure path ran
        wait_for(lambda: retry.failures >= 2, what="a's refresh failing and being retried")
        assert "svc" not in a.names()  # stale: the refresh after the watch failed
        zk.set_acls(path, OPEN_ACL_UNSAFE)  # no watch event for an ACL change
        wait_for(lambda: a.names() == {"locked": 5, "svc": 9}, timeout=15, what="converged")
        wait_for(lambda: retry.failures == 0, what="streak ended")
    finally:
        zk.stop()
        zk.close()


def test_failed_group_refresh_is_retried(make_coord, servers, cluster):
    # The same attack on a group's member list: the group znode itself is unreadable.
    from kazoo.client import KazooClient
    from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl

    a, b = make_coord(), make_coord()
    zk = KazooClient(hosts=servers["zk"], timeout=10, auth_data=[("digest", "t:pw")])
    zk.start(15)
    try:
        path = f"/skymesh/{cluster}/groups/seats"
        zk.create(path, acl=[make_digest_acl("t", "pw", all=True)])
        zk.create(f"{path}/11", acl=OPEN_ACL_UNSAFE)
        wait_for(lambda: "seats" in a._names._groups, what="group seen")  # noqa: SLF001
        retry = a._names._groups["seats"].retry  # noqa: SLF001
        wait_for(lambda: retry.failures >= 2, what="group refresh failing")
        assert a.group_members("seats") == []
        zk.set_acls(path, OPEN_ACL_UNSAFE)
        wait_for(lambda: a.group_members("seats") == [11], timeout=15, what="converged")
        wait_for(lambda: b.group_members("seats") == [11], timeout=15, what="b converged")
    finally:
        zk.stop()
        zk.close()
