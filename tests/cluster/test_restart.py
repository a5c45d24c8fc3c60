"""A node SIGKILLed and restarted at once with the same id (issue 12), real processes."""

from __future__ import annotations

import time

import pytest

from node import Node
from tests.cluster.conftest import SESSION_TIMEOUT, wait_members
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

PROBE = "tests.cluster.services:Probe"


def test_sigkilled_node_restarted_at_once_waits_then_joins(nodes, driver: Node) -> None:
    old = nodes(2, [{"class": PROBE, "args": ["p2"]}])
    wait_members(driver, {2})
    h2 = wait_for(lambda: driver.coord.query_name("p2"), timeout=30)
    old_inc = driver.coord.members()[2].incarnation
    old_pid = driver.call(h2, "where")["pid"]
    old.kill()  # SIGKILL: the old session is not closed, its nodes/2 stays until it expires
    t0 = time.monotonic()
    new = nodes(2, [{"class": PROBE, "args": ["p2"]}])
    wait_for(
        lambda: (
            driver.coord.members().get(2) is not None
            and driver.coord.members()[2].incarnation != old_inc
        ),
        timeout=SESSION_TIMEOUT * 1.5 + 2 + 20,
    )
    assert new.proc is not None and new.proc.poll() is None  # never exited

    # The new incarnation registers p2 again (probably under the same handle number).
    def where() -> dict | None:
        try:
            return driver.call("p2", "where", timeout=2)
        except Exception:  # p2 may not be started on the new node yet
            return None

    where = wait_for(where, timeout=30)
    assert where["node"] == 2 and where["pid"] == new.proc.pid != old_pid
    out = new.output()
    assert out.count("waiting up to") == 1, out[-2000:]
    assert "cannot join cluster" not in out
    assert time.monotonic() - t0 < SESSION_TIMEOUT * 1.5 + 2 + 20
