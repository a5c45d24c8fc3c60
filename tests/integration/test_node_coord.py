"""The Service API's coordination verbs against a real ZooKeeper and Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from node import Node
from tests import coord_scenarios as sc

pytestmark = pytest.mark.integration


@pytest.fixture
def znode(servers: dict[str, str], cluster: str, tmp_path) -> Iterator[Node]:
    n = Node(
        node_id=0, workers=2, cluster=cluster, zk_hosts=servers["zk"],
        redis_url=servers["redis"], session_timeout=6.0, log_file=str(tmp_path / "log"),
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
