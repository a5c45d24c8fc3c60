"""Cluster fixtures: real ``skymesh node`` processes on loopback, real ZooKeeper and Redis.

``nodes`` starts node processes (``python -m node.cli node``) configured only
through ``SKYMESH_*`` environment variables, and kills every one at teardown.
``driver`` is a node inside the test process that joins the same cluster, so
tests call services on the other nodes through the real harbor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node import Node
from tests.integration.conftest import _dump_logs_on_failure, cluster, servers  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
SESSION_TIMEOUT = 4.0


class NodeProc:
    """One ``skymesh node`` process."""

    def __init__(self, node_id: int, env: dict[str, str], log: Path) -> None:
        self.node_id = node_id
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProc:
        out = open(self.log.with_suffix(".out"), "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "node"], cwd=ROOT, env=self.env,
            stdout=out, stderr=subprocess.STDOUT,
        )
        out.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def output(self) -> str:
        text = ""
        for p in (self.log, self.log.with_suffix(".out")):
            if p.exists():
                text += p.read_text(errors="replace")
        return text


@pytest.fixture
def nodes(servers: dict[str, str], cluster: str, tmp_path: Path,
          request: pytest.FixtureRequest) -> Iterator[Callable[..., NodeProc]]:
    started: list[NodeProc] = []

    def start(node_id: int, services: list[dict[str, Any]], **extra: str) -> NodeProc:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
        env.update({
            "PYTHONPATH": str(ROOT),
            "SKYMESH_CLUSTER": cluster,
            "SKYMESH_NODE_ID": str(node_id),
            "SKYMESH_ZK_HOSTS": servers["zk"],
            "SKYMESH_REDIS_URL": servers["redis"],
            "SKYMESH_SESSION_TIMEOUT": str(SESSION_TIMEOUT),
            "SKYMESH_SERVICES": json.dumps(services),
            "SKYMESH_LOG_FILE": str(tmp_path / f"node{node_id}.log"),
            "SKYMESH_CALL_TIMEOUT": "20",
            **extra,
        })
        p = NodeProc(node_id, env, tmp_path / f"node{node_id}.log").start()
        started.append(p)
        return p

    yield start
    failed = getattr(request.node, "rep_call", None)
    for p in started:
        p.resume() if p.proc is not None and p.proc.poll() is None else None
        p.stop()
        if failed is not None and failed.failed:
            print(f"----- node {p.node_id} -----\n{p.output()[-4000:]}")


@pytest.fixture
def make_driver(servers: dict[str, str], cluster: str,
                tmp_path: Path) -> Iterator[Callable[[], Node]]:
    """Start (once) the in-test node; it joins the election when it starts."""
    made: list[Node] = []

    def make() -> Node:
        if not made:
            n = Node(node_id=100, workers=2, cluster=cluster, zk_hosts=servers["zk"],
                     redis_url=servers["redis"], session_timeout=SESSION_TIMEOUT,
                     log_file=str(tmp_path / "driver.log"), call_timeout=20)
            n.start()
            made.append(n)
        return made[0]

    yield make
    for n in made:
        n.stop()


@pytest.fixture
def driver(make_driver: Callable[[], Node]) -> Node:
    return make_driver()


def zk_members(servers: dict[str, str], cluster: str) -> list[str]:
    """Membership as ZooKeeper holds it, read with a plain kazoo client."""
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=servers["zk"], timeout=10)
    zk.start(15)
    try:
        path = f"/skymesh/{cluster}/nodes"
        return zk.get_children(path) if zk.exists(path) else []
    finally:
        zk.stop()
        zk.close()


def wait_members(driver: Node, ids: set[int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= set(driver.coord.members()):
        assert time.monotonic() < deadline, f"members {sorted(driver.coord.members())}"
        time.sleep(0.05)
