"""Three real node processes on loopback with real ZooKeeper and Redis."""

from __future__ import annotations

import threading
import time

import pytest

from node import CallError, Node, NodeDown, group
from tests.cluster.conftest import wait_members, zk_members
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster

PROBE = "tests.cluster.services:Probe"


def probe(name: str | None = None, grp: str | None = None) -> dict:
    return {"class": PROBE, "args": [name, grp]}


def three(nodes) -> list:  # type: ignore[no-untyped-def]
    return [nodes(i, [probe(f"p{i}", "seats")]) for i in (1, 2, 3)]


def wait_name(driver: Node, name: str, timeout: float = 30) -> int:
    return wait_for(lambda: driver.coord.query_name(name), timeout=timeout)


def test_cross_node_calls_names_and_order(nodes, driver: Node) -> None:
    three(nodes)
    wait_members(driver, {1, 2, 3})
    handles = {i: wait_name(driver, f"p{i}") for i in (1, 2, 3)}
    for i, h in handles.items():
        assert driver.call(f"p{i}", "where")["node"] == i
        assert driver.call(h, "echo", {"k": [1, 2]}) == {"k": [1, 2]}
    # A service on node 1 calls one on node 2 by name, which is on another process.
    assert driver.call("p1", "relay", "p2", "echo", "hop") == "hop"
    # Many senders on two nodes blast one sink on the third: order per sender holds.
    n = 2000
    assert driver.call("p1", "blast", handles[3], n) == n
    assert driver.call("p2", "blast", handles[3], n) == n
    driver.send(handles[3], "put", 7, 0)
    wait_for(lambda: driver.call("p3", "seen_count") == 2 * n + 1, timeout=30)
    assert driver.call("p3", "order_ok") == "ok"
    with pytest.raises(CallError, match="no handler"):
        driver.call("p2", "nope")


def test_groups_and_channels_across_nodes(nodes, driver: Node) -> None:
    three(nodes)
    wait_members(driver, {1, 2, 3})
    for i in (1, 2, 3):
        wait_name(driver, f"p{i}")
    wait_for(lambda: len(driver.coord.group_members("seats")) == 3, timeout=30)
    owners = {driver.call(group("seats", key=k), "where")["node"] for k in range(60)}
    assert owners == {1, 2, 3}
    for i in (1, 2, 3):
        driver.call(f"p{i}", "sub", "news")
    time.sleep(1.0)  # SUB sockets take a moment to connect (ZeroMQ's slow joiner)
    for k in range(5):
        driver.call("p1", "pub", "news", k)
    expected = [["news", k] for k in range(5)]
    for i in (1, 2, 3):
        wait_for(lambda i=i: len(driver.call(f"p{i}", "received")) >= 5, timeout=20)
        got = [list(x) for x in driver.call(f"p{i}", "received")]
        assert got == expected, (i, got)


def test_locks_across_nodes_never_overlap(nodes, driver: Node) -> None:
    three(nodes)
    wait_members(driver, {1, 2, 3})
    for i in (1, 2, 3):
        wait_name(driver, f"p{i}")
    for backend in ("redis", "zk"):
        results: list = []
        threads = [
            threading.Thread(target=lambda i=i, b=backend, out=results: out.extend(
                driver.call(f"p{i}", "locked_section", f"acct-{b}", 0.05, b)
                for _ in range(4)))
            for i in (1, 2, 3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 12
        results.sort(key=lambda r: r[1])
        for a, b in zip(results, results[1:], strict=False):
            assert a[2] <= b[1], "critical sections overlapped"
            assert a[0] < b[0], "fences must grow in entry order"


def test_killed_node_fails_pending_calls_fast(nodes, driver: Node) -> None:
    procs = three(nodes)
    wait_members(driver, {1, 2, 3})
    h2 = wait_name(driver, "p2")
    wait_name(driver, "p1")
    driver.call("p1", "watch", h2)
    errors: list = []
    t0 = [0.0]

    def pending() -> None:
        try:
            driver.call(h2, "hang", 60, timeout=60)
        except Exception as exc:
            errors.append((type(exc), time.monotonic() - t0[0]))

    t = threading.Thread(target=pending)
    t.start()
    time.sleep(0.5)
    t0[0] = time.monotonic()
    procs[1].kill()
    t.join(30)
    assert errors, "the pending call never failed"
    kind, after = errors[0]
    assert kind is NodeDown
    assert after < 5.0  # typically well under 1 s (bench/cluster.py measures it)
    with pytest.raises(NodeDown):
        driver.call(h2, "where")
    # The remote monitor on node 1 heard that node 2 went down.
    wait_for(lambda: [list(d) for d in driver.call("p1", "downs")] == [[h2, "nodedown"]],
             timeout=20)
    # Its names vanish with its session; a restart with the same id rejoins.
    wait_for(lambda: driver.coord.query_name("p2") is None, timeout=30)
    nodes(2, [probe("p2", "seats")])
    new_h2 = wait_name(driver, "p2")
    assert driver.call("p2", "where")["node"] == 2
    assert new_h2 >> 32 == 2


def test_call_waits_for_a_node_that_starts_later(nodes, driver: Node) -> None:
    nodes(1, [probe("p1")])
    wait_members(driver, {1})
    wait_name(driver, "p1")
    out: list = []
    t = threading.Thread(target=lambda: out.append(
        driver.call("p1", "call_waiting", "late", "where", 30, timeout=60)))
    t.start()
    time.sleep(1.0)
    nodes(2, [probe("late")])
    t.join(60)
    assert out and out[0]["node"] == 2


def test_master_killed_unique_service_comes_back(nodes, make_driver, servers, cluster) -> None:
    procs = three(nodes)
    # The in-test node joins the election only after the three node processes.
    wait_for(lambda: len(zk_members(servers, cluster)) == 3, timeout=30)
    driver = make_driver()
    wait_members(driver, {1, 2, 3})
    for i in (1, 2, 3):
        wait_name(driver, f"p{i}")
    single = "tests.cluster.services:Singleton"
    h = driver.call("p1", "unique", single)
    assert driver.call("p2", "unique", single) == h
    host = driver.call(h, "where")
    master, epoch = driver.coord.master()
    assert host == master
    assert master in (1, 2, 3)
    procs[[1, 2, 3].index(master)].kill()
    wait_for(lambda: driver.coord.master()[1] > epoch and driver.coord.master()[0] != master,
             timeout=30)
    new_master = driver.coord.master()[0]
    survivor = next(i for i in (1, 2, 3) if i != master)
    def new_unique() -> int | None:
        x = driver.coord.query_name("@unique:" + single)
        return x if x and x != h else None

    h2 = wait_for(new_unique, timeout=30)
    assert driver.call(h2, "where") == new_master
    assert driver.call(f"p{survivor}", "unique", single) == h2


def test_garbage_on_the_pull_port_loses_no_real_traffic(nodes, driver: Node) -> None:
    import msgpack
    import zmq

    nodes(1, [probe("p1")])
    nodes(2, [probe("p2")])
    wait_members(driver, {1, 2})
    sink = wait_name(driver, "p1")
    wait_name(driver, "p2")
    pull = driver.coord.members()[1].endpoints["pull"]
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(pull)
    stop = threading.Event()

    def garbage() -> None:
        junk = [b"", b"\xff\x00garbage", msgpack.packb([1, 2, 3])[:2],
                msgpack.packb([99, 2, 1, 1, 0, []]), msgpack.packb([1, 777, 1, 1, 0, []]),
                b"x" * 100]
        i = 0
        while not stop.is_set():
            push.send(junk[i % len(junk)])
            i += 1
            time.sleep(0.001)

    g = threading.Thread(target=garbage)
    g.start()
    try:
        n = 3000
        assert driver.call("p2", "blast", sink, n) == n
        for i in range(n):
            driver.send(sink, "put", 5, i)
        wait_for(lambda: driver.call("p1", "seen_count") == 2 * n, timeout=30)
        assert driver.call("p1", "order_ok") == "ok"
    finally:
        stop.set()
        g.join()
        push.close()
        ctx.term()
    def dropped() -> set[str]:
        stats = driver.call("@launcher:1", "node_stat")["harbor"]
        return {k for k, v in stats.items() if k.startswith("drop_") and v}

    # Frames from a non-member wait up to the join grace (2 s) before they count.
    wait_for(lambda: {"drop_decode", "drop_version", "drop_nonmember"} <= dropped(), timeout=20)
    assert driver.call("p1", "where")["node"] == 1  # still serving


def test_second_node_with_a_live_id_fails_fast(nodes, driver: Node) -> None:
    first = nodes(1, [probe("p1")])
    wait_members(driver, {1})
    t0 = time.monotonic()
    second = nodes(1, [probe("p1b")])
    assert second.proc is not None
    second.proc.wait(30)
    assert second.proc.returncode == 1
    assert time.monotonic() - t0 < 30
    assert "cannot join cluster" in second.output()
    assert first.proc is not None and first.proc.poll() is None


def test_restarted_node_never_gets_its_predecessors_replies(nodes, driver: Node) -> None:
    nodes(1, [probe("p1")])
    old = nodes(2, [probe("p2")])
    wait_members(driver, {1, 2})
    h1 = wait_name(driver, "p1")
    wait_name(driver, "p2")
    # Node 2 calls node 1, which answers only after node 2 has been replaced.
    driver.send("p2", "relay", h1, "hang", 4.0)
    time.sleep(0.5)
    old_inc = driver.coord.members()[2].incarnation
    old.kill()
    wait_for(lambda: driver.coord.query_name("p2") is None, timeout=30)
    nodes(2, [probe("p2")])
    wait_for(lambda: 2 in driver.coord.members()
             and driver.coord.members()[2].incarnation != old_inc, timeout=30)
    wait_name(driver, "p2")
    time.sleep(4.5)  # node 1's reply to the old incarnation has been sent or dropped

    def dropped() -> int:
        # Node 1 drops it (its link knows the old incarnation is down, or its harbor
        # could never reach the dead process: node 1 held no socket to node 2 before
        # replying), or the new node 2's harbor refuses it as meant for its predecessor.
        n1 = driver.call("@launcher:1", "node_stat")
        n2 = driver.call("@launcher:2", "node_stat")
        return (n1["drops"].get("node-down", 0)
                + n1["harbor"].get("drop_peer-down", 0) + n1["harbor"].get("drop_peer-left", 0)
                + n2["harbor"].get("drop_stale-incarnation", 0))

    wait_for(lambda: dropped() >= 1, timeout=20)
    n2 = driver.call("@launcher:2", "node_stat")
    assert n2["drops"].get("late-reply", 0) == 0  # nothing reached a service of the new node
    assert driver.call("p2", "where")["node"] == 2


def test_status_from_outside(nodes, driver: Node, servers, cluster) -> None:
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import free_port

    ports = {i: free_port("127.0.0.1") for i in (1, 2, 3)}
    for i in (1, 2, 3):
        nodes(i, [probe(f"p{i}", "seats")], SKYMESH_CONSOLE_PORT=str(ports[i]))
    wait_members(driver, {1, 2, 3})
    for i in (1, 2, 3):
        wait_name(driver, f"p{i}")
    wait_for(lambda: len(driver.coord.group_members("seats")) == 3, timeout=30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update({"SKYMESH_ZK_HOSTS": servers["zk"], "SKYMESH_CLUSTER": cluster})
    p = subprocess.run([sys.executable, "-m", "node.cli", "status", "--json"], env=env,
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(p.stdout)
    assert {"1", "2", "3"} <= set(doc["nodes"])
    assert doc["master"] in (1, 2, 3, 100)
    assert doc["epoch"] >= 1
    assert {"p1", "p2", "p3"} <= set(doc["names"])
    assert len(doc["groups"]["seats"]) == 3
    for i in (1, 2, 3):
        classes = [s["class"] for s in doc["nodes"][str(i)]["services"]]
        assert "Probe" in classes
    assert doc["nodes"]["100"] == "no console advertised"
    p = subprocess.run([sys.executable, "-m", "node.cli", "status"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert "3 node(s)" in p.stdout or "4 node(s)" in p.stdout


def test_bank_transfers_from_every_node_keep_the_total(nodes, driver: Node) -> None:
    import random

    from examples.bank.bank import LEDGER_GROUP, TELLER_GROUP, ledger

    svcs = [{"class": "examples.bank.bank:Ledger"}, {"class": "examples.bank.bank:Teller"}]
    for i in (1, 2, 3):
        nodes(i, svcs)
    wait_members(driver, {1, 2, 3})
    wait_for(lambda: len(driver.coord.group_members(LEDGER_GROUP)) == 3
             and len(driver.coord.group_members(TELLER_GROUP)) == 3, timeout=30)
    accounts = [f"a{i}" for i in range(12)]
    for a in accounts:
        driver.call(ledger(a), "open", a, 100)
    tellers = driver.coord.group_members(TELLER_GROUP)
    assert {t >> 32 for t in tellers} == {1, 2, 3}
    errors: list = []

    def load(teller: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            src, dst = rng.sample(accounts, 2)
            try:
                driver.call(teller, "transfer", src, dst, rng.randint(1, 40), timeout=60)
            except CallError as exc:
                if exc.remote_type != "InsufficientFunds":
                    errors.append(exc)

    threads = [threading.Thread(target=load, args=(t, k)) for k, t in enumerate(tellers * 2)]
    for t in threads:
        t.start()
    audits = [driver.call(tellers[0], "audit", accounts, timeout=60)]
    for t in threads:
        t.join(120)
    audits.append(driver.call(tellers[1], "audit", accounts, timeout=60))
    assert errors == []
    assert audits == [1200, 1200]
    assert sum(driver.call(t, "transfers") for t in tellers) > 50
