"""64 real node processes on loopback in one cluster, with ZooKeeper and Redis (issue 15).

The same harness as ``python -m bench.scale`` (:class:`bench.scale.ScaleCluster`),
asserting what must hold at any speed; the figures and their targets
(convergence time, idle CPU, RSS) are the bench's, in docs/scale.md:

- every node comes up (none exits: start-up rides out a suspended ZooKeeper
  session, harbor ports are bound before they are advertised) and sees all 64
  members and all 64 names;
- the all-pairs sweep (every node calls every other at once: 4,032 calls)
  ends with no error -- before the harbor's liveness moved into libzmq's ZMTP
  heartbeats, starved harbor threads made live peers "silent" here;
- after a SIGKILL, every other node's call parked on the victim fails with
  ``NodeDown`` (none before the kill: no false NodeDown), and every node drops
  it from its membership.

``SKYMESH_SCALE_NODES`` changes the size (64 by default).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scale import ScaleCluster
from tests.integration.conftest import cluster, servers  # noqa: F401

NODES = int(os.environ.get("SKYMESH_SCALE_NODES", "64"))
# Two cores start about four node processes a second (0.27 s of CPU each, plus the
# work every member does per join): starting faster measures the start backlog.
STAGGER = 0.3


@pytest.fixture
def scale(servers: dict[str, str], tmp_path: Path) -> Iterator[ScaleCluster]:  # noqa: F811
    env = {"SKYMESH_ZK_HOSTS": servers["zk"], "SKYMESH_REDIS_URL": servers["redis"]}
    c = ScaleCluster(NODES, env, tmp_path, session_timeout=10.0, stagger=STAGGER,
                     out=lambda name, value, unit, **kw: print(name, value, unit, kw) or {})
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.mark.timeout(600)
def test_64_nodes_converge_sweep_and_see_a_kill(scale: ScaleCluster) -> None:
    took = scale.converge(timeout=180.0)
    assert scale.figures["converged"], (
        f"not converged after {took:.0f}s: {scale.figures['not_converged']}; node "
        f"{scale.figures['not_converged'][:1]}:\n"
        + scale.output(scale.figures["not_converged"][0])
    )
    assert scale.exited() == {}, {nid: scale.output(nid) for nid in scale.exited()}

    sweep = scale.sweep(timeout=120.0)
    assert sweep["errors"] == [], sweep["errors"][:10]
    assert sweep["calls"] == NODES * (NODES - 1)

    kill = scale.kill_one(timeout=60.0)
    assert kill["not_armed"] == [] and kill["failed_before_kill"] == [], kill
    assert kill["calls_failed"] == NODES - 1 and kill["errors"] == ["NodeDown"], kill
    assert kill["members_dropped"] == NODES - 1, kill
    survivors = {nid: rc for nid, rc in scale.exited().items() if nid != kill["victim"]}
    assert survivors == {}, survivors
