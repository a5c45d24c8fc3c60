"""Coordination caches and calls recovering from faults (issue 15), against a real ZooKeeper."""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import pytest
from coord_helpers import TcpProxy, wait_for

import coord

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


def _in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn(*args)`` in a thread; the list gets ("ok", result, seconds) or ("err", exc, s)."""
    out: list[Any] = []

    def run() -> None:
        t0 = time.monotonic()
        try:
            out.append(("ok", fn(*args), time.monotonic() - t0))
        except Exception as exc:
            out.append(("err", exc, time.monotonic() - t0))

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_blocking_calls_wait_through_a_zookeeper_restart(make_coord, faults, caplog):
    # Issue 15: a register made while the session was SUSPENDED raised CoordUnavailable
    # at once and the node exited. Now it waits for the session and then succeeds.
    a = make_coord(session_timeout=20.0)
    a.register_name("before", 1)
    calls: list[tuple[threading.Thread, list[Any]]] = []
    with caplog.at_level(logging.WARNING, logger="coord"):
        faults.stop_zk()
        try:
            wait_for(lambda: a.health is coord.Health.SUSPENDED, what="suspended")
            calls = [
                _in_thread(a.register_name, "during", 2),
                _in_thread(a.join_group, "seats", 2),
                _in_thread(a.config_set, "limits", {"max": 3}),
                _in_thread(a.unregister_name, "before", 1),
            ]
            time.sleep(1.0)
            assert all(t.is_alive() for t, _ in calls), [out for _, out in calls]
        finally:
            faults.start_zk()
        for t, _ in calls:
            t.join(30)
    results = [out[0] for _, out in calls]
    assert [r[0] for r in results] == ["ok"] * 4, results
    assert all(r[2] >= 1.0 for r in results)  # they did wait
    waits = [r for r in caplog.records if "waits up to" in r.getMessage()]
    assert len(waits) == 1  # one line per suspension, not one per call
    b = make_coord()
    wait_for(lambda: b.names() == {"during": 2}, what="b sees the names")
    wait_for(lambda: b.group_members("seats") == [2], what="b sees the group")
    wait_for(lambda: b.config_get("limits") == {"max": 3}, what="b sees the config")


def test_a_call_through_a_suspended_session_gives_up_after_the_session_timeout(make_coord, faults):
    a = make_coord(session_timeout=3.0)
    faults.stop_zk()
    try:
        wait_for(lambda: a.health is coord.Health.SUSPENDED, what="suspended")
        t0 = time.monotonic()
        with pytest.raises(coord.CoordUnavailable, match="still suspended"):
            a.register_name("x", 1)
        took = time.monotonic() - t0
        assert 2.5 < took < 6, took
    finally:
        faults.start_zk()
    wait_for(lambda: a.health is coord.Health.CONNECTED, timeout=40, what="reconnected")
    a.register_name("x", 1)


def test_a_waiting_call_fails_when_the_session_is_lost(servers, cluster):
    # The connection is cut by a proxy while ZooKeeper keeps running; the session is
    # expired behind the client's back; when the client gets through again it learns
    # the session is LOST, and the call that was waiting fails instead of retrying.
    from kazoo.client import KazooClient

    proxy = TcpProxy(servers["zk"])
    a = coord.connect(proxy.address, None, cluster, session_timeout=10.0)
    try:
        a.start(None, "localhost", os.getpid(), {})
        session = a._client.client_id  # noqa: SLF001 - the fault needs the session id
        proxy.block()
        wait_for(lambda: a.health is coord.Health.SUSPENDED, what="suspended")
        t, out = _in_thread(a.register_name, "y", 5)
        time.sleep(0.5)
        assert t.is_alive()
        # Take the session over on a direct connection and close it: it expires.
        other = KazooClient(hosts=servers["zk"], client_id=session, timeout=4)
        other.start(15)
        other.stop()
        other.close()
        proxy.unblock()
        t.join(20)
        assert out and out[0][0] == "err", out
        assert isinstance(out[0][1], coord.CoordUnavailable) and "lost" in str(out[0][1])
        assert out[0][2] < 10  # failed on LOST, not at the end of the wait
        wait_for(lambda: a.health is coord.Health.CONNECTED, what="new session")
        a.register_name("y", 5)
        assert a.query_name("y") == 5
    finally:
        proxy.unblock()  # stop() talks to ZooKeeper
        a.stop()
        proxy.close()
