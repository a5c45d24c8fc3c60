"""Integration fixtures: real ZooKeeper and Redis from scripts/servers.sh.

- ``servers`` (session): starts the servers unless already up; stops them at
  the end only if it started them.
- ``cluster``: a fresh uuid cluster name per test (ZooKeeper root and Redis
  key prefix ``skymesh:<cluster>:``), deleted afterwards.
- ``make_coord``: coordinators for this test, stopped afterwards.
- ``faults``: expire a kazoo session, restart Redis, stop/start ZooKeeper.
- On failure the tails of the server logs are printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "servers.sh"
STATE_DIR = Path(os.environ.get("SKYMESH_SERVERS_DIR", "/tmp/skymesh-servers"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # coord_helpers


def _servers(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, check=check, timeout=180
    )


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, str]]:
    """Ensure ZooKeeper and Redis are up; yield their addresses."""
    started = _servers("status", check=False).returncode != 0
    if started:
        res = _servers("start", check=False)
        if res.returncode != 0:
            pytest.fail(f"scripts/servers.sh start failed:\n{res.stdout}\n{res.stderr}")
    env = dict(line.split("=", 1) for line in _servers("env").stdout.split())
    yield {"zk": env["SKYMESH_ZK_HOSTS"], "redis": env["SKYMESH_REDIS_URL"]}
    if started:
        _servers("stop", check=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(autouse=True)
def _dump_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for log in (STATE_DIR / "zookeeper" / "zookeeper.log", STATE_DIR / "redis" / "redis.log"):
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()[-40:]
                print(f"----- last lines of {log} -----")
                print("\n".join(lines))


@pytest.fixture
def cluster(servers: dict[str, str]) -> Iterator[str]:
    """A cluster name of this test alone; its ZooKeeper tree and Redis keys are removed after."""
    name = f"t{uuid.uuid4().hex[:12]}"
    yield name
    _servers("start", check=False)  # a fault test may have left one down
    try:
        import redis
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=servers["zk"], timeout=10)
        zk.start(15)
        zk.delete(f"/skymesh/{name}", recursive=True)
        zk.stop()
        zk.close()
        r = redis.Redis.from_url(servers["redis"])
        keys = list(r.scan_iter(f"skymesh:{name}:*"))
        if keys:
            r.delete(*keys)
        r.close()
    except Exception as exc:
        print(f"cleanup of cluster {name} failed: {exc!r}")


@pytest.fixture
def make_coord(servers: dict[str, str], cluster: str) -> Iterator[Callable[..., Any]]:
    """``make_coord(node_id=None, session_timeout=4.0, listener=None, start=True,
    redis=True, endpoints=None)``; nothing listens on the default endpoint."""
    import coord

    made: list[Any] = []

    def make(
        node_id: int | None = None,
        session_timeout: float = 4.0,
        listener: Any = None,
        start: bool = True,
        redis: bool = True,
        endpoints: dict[str, str] | None = None,
    ) -> Any:
        c = coord.connect(
            servers["zk"],
            servers["redis"] if redis else None,
            cluster,
            session_timeout=session_timeout,
        )
        made.append(c)
        if listener is not None:
            c.add_listener(listener)
        if start:
            eps = {"harbor": "tcp://127.0.0.1:1"} if endpoints is None else endpoints
            c.start(node_id, "localhost", os.getpid(), eps)
        return c

    yield make
    for c in made:
        c.stop()


class Faults:
    """Fault helpers against the real servers."""

    def __init__(self, servers: dict[str, str]) -> None:
        self.servers = servers

    def expire_session(self, c: Any) -> None:
        """Expire ``c``'s ZooKeeper session: another client takes it over and closes it."""
        from kazoo.client import KazooClient

        client = c._client  # noqa: SLF001 - the fault needs the session id
        sid, pwd = client.client_id
        other = KazooClient(hosts=self.servers["zk"], client_id=(sid, pwd), timeout=4)
        other.start(15)
        other.stop()
        other.close()

    def restart_redis(self) -> None:
        """Stop and start Redis on the same port (all data lost: no persistence)."""
        _servers("restart-redis")

    def stop_zk(self) -> None:
        """Stop ZooKeeper (sessions survive if it is back before they time out)."""
        _servers("stop-zk")

    def start_zk(self) -> None:
        """Start ZooKeeper again."""
        _servers("start-zk")


@pytest.fixture
def faults(servers: dict[str, str]) -> Faults:
    """Fault helpers."""
    return Faults(servers)
