"""``skymesh health`` means it: a frozen node is unhealthy though still a member.

A real node process (ZooKeeper, CURVE keys, a console bound on loopback) is
frozen with SIGSTOP: ZooKeeper still lists it (its session outlives the
check), so the old membership-only check said ok; the new one asks the node's
own console to run ``health`` (coordination connected, ``.launcher`` answers,
the harbor loop turns) and fails within ``--timeout``. SIGCONT and
it is healthy again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(servers: dict[str, str], cluster: str, keys: Path, console: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update({
        "PYTHONPATH": str(ROOT),
        "SKYMESH_ZK_HOSTS": servers["zk"],
        "SKYMESH_CLUSTER": cluster,
        "SKYMESH_NODE_ID": "5",
        "SKYMESH_KEYS_DIR": str(keys),
        "SKYMESH_CONSOLE_PORT": str(console),
        "SKYMESH_SESSION_TIMEOUT": "30",  # membership stays while the node is frozen
    })  # fmt: skip
    return env


def _health(env: dict[str, str], timeout: float = 3.0) -> tuple[int, str, float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "node.cli", "health", "--timeout", str(timeout)],
                       env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


@pytest.fixture
def node(servers: dict[str, str], cluster: str, tmp_path: Path) -> Iterator[tuple]:
    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "node.cli", "keys", "init", str(keys)], check=True,
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    env = _env(servers, cluster, keys, _free_port())
    with open(tmp_path / "node.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "node.cli", "node"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)
        try:
            yield proc, env
        finally:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_health_fails_for_a_frozen_member_and_recovers(node: tuple) -> None:
    proc, env = node
    wait_for(lambda: _health(env)[0] == 0, timeout=30)
    code, out, _ = _health(env)
    assert code == 0 and "harbor, workers and coordination answer" in out, out

    os.kill(proc.pid, signal.SIGSTOP)
    code, out, took = _health(env, timeout=2.0)
    assert code == 1, out
    assert "did not answer within 2s" in out, out
    assert took < 20, took  # the deadline, plus a CLI start on a busy machine

    os.kill(proc.pid, signal.SIGCONT)
    wait_for(lambda: _health(env)[0] == 0, timeout=20)


def test_health_without_the_token_is_refused(node: tuple, tmp_path: Path) -> None:
    """The CLI takes the token from keys_dir; with a wrong one the console refuses it."""
    _, env = node
    wait_for(lambda: _health(env)[0] == 0, timeout=30)
    wrong = tmp_path / "wrong.token"
    wrong.write_text("x" * 40)
    wrong.chmod(0o600)
    code, out, _ = _health({**env, "SKYMESH_CONSOLE_TOKEN_FILE": str(wrong)})
    assert code == 1 and "refused" in out, out


def test_a_stalled_harbor_is_unhealthy(servers: dict[str, str], cluster: str,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the harbor's I/O thread stalls (the issue's case: peers declared the node
    down while the membership check said ok): the console's ``health`` says so."""
    from harbor._ioloop import IoLoop
    from node import Node
    from node.cli.ops import ConsoleClient

    port = _free_port()
    n = Node(node_id=6, cluster=cluster, zk_hosts=servers["zk"], console_port=port,
             log_file=str(tmp_path / "log"))
    n.start()
    try:
        def health() -> tuple[bool, list[str]]:
            with ConsoleClient("127.0.0.1", port, None, 10) as c:
                return c.command("health")

        ok, lines = wait_for(lambda: (r := health())[0] and r, timeout=20)
        assert "harbor loop turns" in lines

        stall = IoLoop.tick

        def stalled(self: IoLoop, now: float) -> None:
            time.sleep(0.5)  # the loop turns no more than twice a second, counting no tick

        monkeypatch.setattr(IoLoop, "tick", stalled)
        time.sleep(0.6)  # the loop is inside the stalled call now
        ok, lines = health()
        assert not ok and "harbor: its loop did not turn" in lines[-1], lines
        assert "coordination" not in lines[-1] and "workers" not in lines[-1], lines

        monkeypatch.setattr(IoLoop, "tick", stall)
        wait_for(lambda: health()[0], timeout=10)
    finally:
        n.stop()
