"""`skymesh node` raises its soft open-file limit to the hard one (issue 15): a node
holds about 10 descriptors per peer, so 1,024 would stop a cluster near 100 nodes."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no Max open files line")


def test_node_process_raises_a_low_soft_fd_limit(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = 256

    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update({"PYTHONPATH": str(ROOT), "SKYMESH_LOG_FILE": str(tmp_path / "n.log")})
    # The child starts with soft 256, hard unchanged.
    p = subprocess.Popen(["sh", "-c", f'ulimit -Sn {low} && exec "$0" -m node.cli node',
                          sys.executable], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        want = hard if hard != resource.RLIM_INFINITY else 1 << 20
        log = tmp_path / "n.log"
        deadline = time.monotonic() + 100
        # "up" is logged after the node started, well after the limit was raised.
        while " up: " not in (log.read_text() if log.exists() else ""):
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            assert time.monotonic() < deadline, "the node never came up"
            time.sleep(0.1)
        assert _soft_limit(p.pid) == want
    finally:
        p.terminate()
        p.wait(30)
