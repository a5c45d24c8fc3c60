"""``skymesh health`` and ``skymesh config get|set|list`` against a real ZooKeeper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node import Node
from tests import coord_scenarios as sc
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def skymesh(servers: dict[str, str], cluster: str, *args: str, **env: str) -> tuple[int, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    full.update(
        {
            "PYTHONPATH": str(ROOT),
            "SKYMESH_ZK_HOSTS": servers["zk"],
            "SKYMESH_CLUSTER": cluster,
            **env,
        }
    )
    p = subprocess.run(
        [sys.executable, "-m", "node.cli", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, p.stdout + p.stderr


def test_config_from_the_cli_reaches_services(servers, cluster, tmp_path) -> None:
    n = Node(node_id=7, cluster=cluster, zk_hosts=servers["zk"], log_file=str(tmp_path / "l"))
    n.start()
    try:
        code, out = skymesh(servers, cluster, "health", SKYMESH_NODE_ID="7")
        assert code == 0, out
        code, out = skymesh(servers, cluster, "health", SKYMESH_NODE_ID="8")
        assert code == 1
        assert "not a member" in out
        m = n.newservice(sc.Member)
        assert n.call(m, "read_config", "motd") == "default"
        code, out = skymesh(servers, cluster, "config", "set", "motd", '{"text": "hi"}')
        assert code == 0, out
        wait_for(lambda: ("config", "motd", {"text": "hi"}) in n.call(m, "get_events"))
        code, out = skymesh(servers, cluster, "config", "get", "motd")
        assert json.loads(out) == {"text": "hi"}
        code, out = skymesh(servers, cluster, "config", "list")
        assert json.loads(out)["motd"] == {"text": "hi"}
    finally:
        n.stop()
