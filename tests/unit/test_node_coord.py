"""The coordination verbs of the Service API on a standalone node (embedded backend)."""

from __future__ import annotations

import pytest

from node import Node
from tests import coord_scenarios as sc


def test_global_names(node: Node) -> None:
    sc.global_names(node, "")


def test_query_waits_for_global_name(node: Node) -> None:
    sc.query_waits_for_global_name(node, "")


def test_groups_route_by_key(node: Node) -> None:
    sc.groups_route_by_key(node, "")


def test_config_change_notices(node: Node) -> None:
    sc.config_change_notices(node, "")


@pytest.mark.parametrize("backend", ["redis", "zk"])
def test_locks_serialize_with_fences(node: Node, backend: str) -> None:
    # Standalone with no Redis configured: both backends are the in-process lock.
    sc.locks_serialize_with_fences(node, "", backend)


def test_lock_wait_timeout_and_killed_waiter(node: Node) -> None:
    sc.lock_wait_timeout_and_killed_waiter(node, "", "redis")


def test_cluster_unique_service(node: Node) -> None:
    sc.cluster_unique_service(node, "")
