"""Supervision across real node processes: a remote child killed, crashing in on_start,
its node SIGKILLed (restarted elsewhere, global name back), its node back again."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from node import Node
from node.address import node_of
from tests.cluster.conftest import wait_members
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

BOSS = "tests.cluster.supervised:Boss"
CRASHY = "tests.cluster.supervised:Crashy"


def boss(i: int) -> dict[str, Any]:
    return {"class": BOSS, "args": [f"boss{i}"]}


def child(driver: Node, sup: int, cid: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in driver.call(sup, "children") if c["id"] == cid)
    return found


def rerun(driver: Node, sup: int, cid: str, old: int, timeout: float = 30) -> dict[str, Any]:
    """The child ``cid`` once it runs again under a handle other than ``old``."""
    def check() -> dict[str, Any] | None:
        c = child(driver, sup, cid)
        return c if c["state"] == "running" and c["handle"] not in (None, old) else None
    found: dict[str, Any] = wait_for(check, timeout=timeout)
    return found


def up(nodes, driver: Node, ids: tuple[int, ...]) -> list:  # type: ignore[no-untyped-def]
    procs = [nodes(i, [boss(i)]) for i in ids]
    wait_members(driver, set(ids))
    for i in ids:
        wait_for(lambda i=i: driver.coord.query_name(f"boss{i}"), timeout=30)
    return procs


def test_remote_child_killed_then_crashing_comes_back_with_its_name(nodes, driver: Node) -> None:
    up(nodes, driver, (1, 2))
    key = uuid.uuid4().hex[:8]
    name = f"crashy-{key}"
    sup = driver.call("boss1", "supervise", [
        {"class": CRASHY, "args": [key, name], "id": "c", "name": name, "node": 2},
    ], {"intensity": 10, "period": 30, "backoff_base": 0.1})
    assert node_of(sup) == 1
    c = child(driver, sup, "c")
    h1 = c["handle"]
    assert c["state"] == "running" and c["node"] == 2
    assert driver.call(h1, "where")["node"] == 2
    wait_for(lambda: driver.coord.query_name(name) == h1, timeout=10)

    driver.call("boss2", "fail_next", key, 3)  # the next three starts on node 2 raise
    assert driver.kill(h1)
    c = rerun(driver, sup, "c", h1)
    assert c["node"] == 2 and c["last_exit"] == "kill"
    assert c["restarts"] == 4  # three failed starts, then the one that held
    assert driver.call("boss2", "starts", key) == 5
    times = c["restarted_at"]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    # The new instance registered the same global name: the old one's was let go first.
    wait_for(lambda: driver.coord.query_name(name) == c["handle"], timeout=10)
    assert driver.call(name, "where")["node"] == 2


def test_child_on_a_killed_node_restarts_elsewhere_then_home_again(nodes, driver: Node) -> None:
    procs = up(nodes, driver, (1, 2))
    key = uuid.uuid4().hex[:8]
    name = f"roaming-{key}"
    sup = driver.call("boss1", "supervise", [
        {"class": CRASHY, "args": [f"{key}-local"], "id": "local"},
        {"class": CRASHY, "args": [key, name], "id": "remote", "name": name, "node": 2},
    ], {"intensity": 5, "period": 30})
    local = child(driver, sup, "local")["handle"]
    h1 = child(driver, sup, "remote")["handle"]
    assert node_of(h1) == 2
    wait_for(lambda: driver.coord.query_name(name) == h1, timeout=10)

    procs[1].kill()  # SIGKILL node 2: the child arrives as "nodedown"
    c = rerun(driver, sup, "remote", h1)
    assert c["node"] == 1 and c["last_exit"] == "nodedown"  # restarted elsewhere: node 1
    assert child(driver, sup, "local")["handle"] == local  # one_for_one: the sibling stays
    # Its global name comes back once node 2's session has expired and dropped it.
    wait_for(lambda: driver.coord.query_name(name) == c["handle"], timeout=30)
    assert driver.call(name, "where")["node"] == 1

    # Node 2 joins again: the child's spec names it, so a restart places it there.
    nodes(2, [boss(2)])
    wait_members(driver, {2})
    wait_for(lambda: driver.coord.query_name("boss2"), timeout=30)
    h3 = driver.call(sup, "restart_child", "remote")
    assert node_of(h3) == 2 and driver.call(h3, "where")["node"] == 2
    wait_for(lambda: driver.coord.query_name(name) == h3, timeout=30)


def test_remote_placement_only_of_launchable_classes(nodes, driver: Node) -> None:
    procs = up(nodes, driver, (1, 2))
    # Boss is allowed on node 2 (its config lists it) but Probe's module is not imported
    # there and Probe is not launchable: node 2 refuses, every retry fails, the supervisor
    # gives up and its start fails.
    with pytest.raises(Exception, match="gave up starting child"):
        driver.call("boss1", "supervise", [
            {"class": "tests.cluster.services:Probe", "id": "p", "node": 2},
        ], {"intensity": 2, "backoff_base": 0.05})
    wait_for(lambda: "PermissionError" in procs[0].output(), timeout=10)
