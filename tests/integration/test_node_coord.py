"""The Service API's coordination verbs against a real ZooKeeper and Redis."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from node import CallError, Node, expose
from tests import coord_scenarios as sc
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def znode(servers: dict[str, str], cluster: str, tmp_path) -> Iterator[Node]:
    n = Node(
        node_id=0,
        workers=2,
        cluster=cluster,
        zk_hosts=servers["zk"],
        redis_url=servers["redis"],
        session_timeout=6.0,
        log_file=str(tmp_path / "log"),
    )
    n.start()
    try:
        yield n
    finally:
        n.stop()


def test_node_joins_membership_with_auto_id(znode: Node) -> None:
    members = znode.coord.members()
    assert znode.node_id in members
    assert members[znode.node_id].incarnation == znode.incarnation


def test_global_names(znode: Node) -> None:
    sc.global_names(znode, "")


def test_query_waits_for_global_name(znode: Node) -> None:
    sc.query_waits_for_global_name(znode, "")


def test_groups_route_by_key(znode: Node) -> None:
    sc.groups_route_by_key(znode, "")


def test_config_change_notices(znode: Node) -> None:
    sc.config_change_notices(znode, "")


@pytest.mark.parametrize("backend", ["redis", "zk"])
def test_locks_serialize_with_fences(znode: Node, backend: str) -> None:
    sc.locks_serialize_with_fences(znode, "", backend)


@pytest.mark.parametrize("backend", ["redis", "zk"])
def test_lock_wait_timeout_and_killed_waiter(znode: Node, backend: str) -> None:
    sc.lock_wait_timeout_and_killed_waiter(znode, "", backend)


def test_cluster_unique_service(znode: Node) -> None:
    sc.cluster_unique_service(znode, "")


class Holder(sc.Locker):
    @expose
    def lost_notices(self):
        return list(self.lost)


def test_redis_restart_tells_the_holding_service(znode: Node, faults) -> None:
    h = znode.newservice(Holder)
    out: list = []
    t = threading.Thread(target=lambda: out.append(_outcome(znode, h, "acct", 4.0, "redis")))
    t.start()
    wait_for(lambda: znode.call(h, "get_log"))
    first_fence = znode.call(h, "get_log")[0][1]
    faults.restart_redis()
    wait_for(lambda: znode.call(h, "lost_notices"), timeout=20)
    assert tuple(znode.call(h, "lost_notices")[0]) == ("acct", first_fence)
    t.join(30)
    # The block ran past the loss: it ends with LockLost, not with its result.
    assert out and isinstance(out[0], CallError) and out[0].remote_type == "LockLost"
    other = znode.newservice(Holder)
    assert znode.call(other, "hold", "acct", 0.01, "redis") > first_fence


def test_session_expiry_reregisters_names_and_reports_zk_locks(znode: Node, faults) -> None:
    a = znode.newservice(sc.Member, "survivor")
    h = znode.newservice(Holder)
    out: list = []
    t = threading.Thread(target=lambda: out.append(_outcome(znode, h, "zkey", 3.0, "zk")))
    t.start()
    wait_for(lambda: znode.call(h, "get_log"))
    faults.expire_session(znode.coord)
    wait_for(lambda: znode.call(h, "lost_notices"), timeout=30)
    # The name comes back (re-registered by the node that still owns it).
    wait_for(lambda: znode.coord.query_name("survivor") == a, timeout=30)
    assert znode.call("survivor", "whoami") == a
    t.join(30)
    assert out and isinstance(out[0], CallError) and out[0].remote_type == "LockLost"


def _outcome(node: Node, h: int, key: str, seconds: float, backend: str) -> object:
    try:
        return node.call(h, "hold", key, seconds, backend, timeout=30)
    except CallError as exc:
        return exc


class Watcher(sc.Member):
    def on_start(self, *args: object) -> None:
        self.states: list[str] = []

    def on_coord(self, state: str) -> None:
        self.states.append(state)

    @expose
    def seen(self) -> list[str]:
        return list(self.states)

    @expose
    def master(self) -> bool:
        return self.is_master()


def test_services_hear_of_a_suspended_and_reconnected_session(znode: Node, faults) -> None:
    w = znode.newservice(Watcher)
    wait_for(lambda: znode.call(w, "master"), timeout=20)  # the only node: master
    faults.stop_zk()
    try:
        wait_for(lambda: "suspended" in znode.call(w, "seen"), timeout=20)
        assert znode.call(w, "master") is False  # the lease ended with the connection
    finally:
        faults.start_zk()
    wait_for(lambda: znode.call(w, "seen")[-1:] == ["reconnected"], timeout=30)


def test_on_group_notices_from_zookeeper(znode: Node) -> None:
    from tests.unit.test_idioms import GroupWatcher, Joiner

    w = znode.newservice(GroupWatcher)
    assert znode.call(w, "look", "zk-rooms") == []
    j = znode.newservice(Joiner)
    znode.call(j, "join", "zk-rooms")
    wait_for(lambda: znode.call(w, "seen") == [["zk-rooms", "join", j]], timeout=10)
    znode.call(j, "leave", "zk-rooms")
    wait_for(lambda: znode.call(w, "seen")[-1:] == [["zk-rooms", "leave", j]], timeout=10)
