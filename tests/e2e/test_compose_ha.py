"""docker-compose.ha.yml: nodes on a three-server ZooKeeper ensemble and Redis
behind three Sentinels; the cluster keeps working when one ZooKeeper server or
the Redis master dies.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.compose_helpers import ComposeProject, compose_up, wait_until

# The first test's setup may build every image from scratch (a few minutes).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ZK = "zk1:2181,zk2:2181,zk3:2181"
ROOT = "/skymesh/e2e"
SESSION_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def ha(request: pytest.FixtureRequest, image_env: dict[str, str]) -> Iterator[ComposeProject]:
    with compose_up(request, ["docker-compose.ha.yml"], image_env, "ha") as project:
        wait_until("nodes 1, 2 and 3 in ZooKeeper", lambda: members(project) == {1, 2, 3}, 120)
        yield project


def members(project: ComposeProject, via: str = "node1") -> set[int]:
    nodes = project.zk(via, ZK, f"{ROOT}/nodes")[f"{ROOT}/nodes"] or {}
    return {int(n) for n in nodes}


def test_sentinels_watch_a_master_with_two_replicas(ha: ComposeProject) -> None:
    code, out = ha.redis_cli("sentinel1", "-p", "26379",
                             "sentinel", "get-master-addr-by-name", "mymaster")
    assert code == 0 and out.split()[:2] == ["redis", "6379"], out
    # A Sentinel learns of replicas from the master's INFO, every 10 s.
    wait_until("sentinel1 to know both replicas", lambda: ha.redis_cli(
        "sentinel1", "-p", "26379", "sentinel", "replicas", "mymaster",
    )[1].count("redis-replica") >= 2, 30)


def test_redis_and_sentinels_refuse_clients_without_the_password(ha: ComposeProject) -> None:
    """Master, replicas and Sentinels all run with requirepass and protected mode."""
    for service, port in [("redis", "6379"), ("redis-replica1", "6379"),
                          ("sentinel1", "26379"), ("sentinel2", "26379")]:
        code, out = ha.exec(service, "redis-cli", "-p", port, "ping")
        assert "NOAUTH" in out and "PONG" not in out, (service, out)
        code, out = ha.redis_cli(service, "-p", port, "ping")
        assert out.strip() == "PONG", (service, out)
    code, out = ha.exec("sentinel1", "redis-cli", "-p", "26379",
                        "sentinel", "get-master-addr-by-name", "mymaster")
    assert "NOAUTH" in out and "6379" not in out, out


def test_every_container_is_locked_down(ha: ComposeProject) -> None:
    for service in ["zk1", "zk2", "zk3", "redis", "redis-replica1", "redis-replica2",
                    "sentinel1", "sentinel2", "sentinel3", "node1", "node2", "node3"]:
        ha.assert_locked_down(service)


def test_anonymous_zookeeper_client_is_refused_on_the_ensemble(ha: ComposeProject) -> None:
    script = ("import sys\n"
              "from kazoo.client import KazooClient\n"
              "zk = KazooClient(hosts=sys.argv[1], timeout=5.0); zk.start(timeout=15)\n"
              "try:\n"
              "    zk.get_children(sys.argv[2]); print('ALLOWED')\n"
              "except Exception as exc:\n"
              "    print(type(exc).__name__)\n"
              "zk.stop()\n")
    code, out = ha.exec("node2", "python", "-c", script, ZK, f"{ROOT}/nodes")
    assert code == 0 and out.strip().splitlines()[-1] == "NoAuthError", out


def test_redis_lock_through_sentinels(ha: ComposeProject) -> None:
    results = ha.calls("node1", "e2e", ZK, [["demo.1", "locked", "e2e-ha", "redis"],
                                            ["demo.2", "locked", "e2e-ha", "redis"],
                                            ["demo.3", "locked", "e2e-ha", "zk"]])
    assert all("ok" in r for r in results), results
    assert results[1]["ok"] > results[0]["ok"]  # fencing tokens grow


def test_cluster_survives_losing_one_zookeeper_server(ha: ComposeProject) -> None:
    """Sessions move to the surviving servers: after longer than a session timeout
    every node is still a member and calls still cross nodes."""
    ha.container("zk1").kill()
    try:
        time.sleep(SESSION_TIMEOUT + 2)
        (r,) = wait_until(
            "a call across nodes with zk1 down",
            lambda: [r for r in ha.calls("node2", "e2e", "zk2:2181,zk3:2181",
                                         [["demo.3", "ask", "demo.1"]]) if "ok" in r],
            30)
        assert r["ok"]["answer"]["host"] == "node1"
        assert members(ha, via="node2") == {1, 2, 3}
    finally:
        ha.container("zk1").start()


def test_redis_lock_after_master_failover(ha: ComposeProject) -> None:
    """Kill the Redis master: the Sentinels promote a replica and locks work again."""
    (before,) = ha.calls("node1", "e2e", ZK, [["demo.1", "locked", "e2e-failover", "redis"]])
    assert "ok" in before, before
    ha.container("redis").kill()
    wait_until("a replica promoted", lambda: "redis-replica" in ha.redis_cli(
        "sentinel1", "-p", "26379", "sentinel", "get-master-addr-by-name",
        "mymaster")[1], 60)
    (after,) = wait_until(
        "a Redis lock through the new master",
        lambda: [r for r in ha.calls("node1", "e2e", ZK,
                                     [["demo.2", "locked", "e2e-failover", "redis"]])
                 if "ok" in r],
        60)
    assert isinstance(after["ok"], int)
    assert after["ok"] > before["ok"]  # fences keep growing across the failover
