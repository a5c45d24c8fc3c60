"""``skymesh reload`` across real node processes: the CLI reaches each node's console."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from node import Node
from tests.cluster.conftest import ROOT, wait_members
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.cluster

SOURCE = '''
from node import Service, expose


class Counter(Service):
    async def on_start(self, name):
        self.n = 0
        await self.register(name)

    @expose
    def hit(self):
        self.n += 1
        return ["{v}", self.n]
'''
MODULE = "reload_cluster_mod"


def _cli(servers: dict[str, str], cluster: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update({"SKYMESH_ZK_HOSTS": servers["zk"], "SKYMESH_CLUSTER": cluster,
                "PYTHONPATH": str(ROOT)})
    return subprocess.run([sys.executable, "-m", "node.cli", "reload", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_reloads_two_node_processes(nodes, driver: Node, servers, cluster,
                                        tmp_path: Path) -> None:
    src = tmp_path / "code"
    src.mkdir()
    path = src / f"{MODULE}.py"
    path.write_text(textwrap.dedent(SOURCE.format(v="v1")))
    for i in (1, 2):
        nodes(i, [{"class": f"{MODULE}:Counter", "args": [f"c{i}"]}],
              SKYMESH_CONSOLE_PORT=str(free_port()), PYTHONPATH=f"{ROOT}{os.pathsep}{src}")
    wait_members(driver, {1, 2})
    for i in (1, 2):
        wait_for(lambda i=i: driver.coord.query_name(f"c{i}"), timeout=30)
        assert driver.call(f"c{i}", "hit") == ["v1", 1]

    path.write_text(textwrap.dedent(SOURCE.format(v="v2")))
    p = _cli(servers, cluster, MODULE, "--node", "1", "--node", "2")
    assert p.returncode == 0, p.stderr
    assert "node 1: reloaded" in p.stdout and "node 2: reloaded" in p.stdout
    for i in (1, 2):
        assert driver.call(f"c{i}", "hit") == ["v2", 2]  # new code, the same counter

    # A broken module: every node says why, in one line, and keeps running v2.
    path.write_text("class Counter(:\n")
    p = _cli(servers, cluster, MODULE, "--node", "1", "--node", "2")
    assert p.returncode == 1
    errors = [x for x in p.stderr.splitlines() if "SyntaxError" in x]
    assert len(errors) == 2 and all("old code keeps running" in x for x in errors)
    for i in (1, 2):
        assert driver.call(f"c{i}", "hit") == ["v2", 3]

    # Every member by default: the driver (node 100) has no console, and the CLI says
    # so rather than reporting success for a cluster it did not fully reload.
    path.write_text(textwrap.dedent(SOURCE.format(v="v3")))
    p = _cli(servers, cluster, MODULE)
    assert p.returncode == 1
    assert "node 100: not reloaded: no console advertised" in p.stderr
    assert "node 1: reloaded" in p.stdout and "node 2: reloaded" in p.stdout
    assert driver.call("c1", "hit") == ["v3", 4]
    # A node named but not a member is an error too.
    p = _cli(servers, cluster, MODULE, "--node", "7")
    assert p.returncode == 1 and "node 7: not reloaded: not a cluster member" in p.stderr
