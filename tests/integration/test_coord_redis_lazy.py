"""Redis is paid for by the nodes that lock (issue 15): redis-py is imported and
its two threads and connections made on the first Redis lock, not at start.

The start still checks credentials and TLS (``test_coord_redis_auth.py`` attacks
that check); for ``redis://``/``rediss://`` URLs it does so without redis-py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import coord

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import json, sys, threading
import coord
c = coord.connect(sys.argv[1], sys.argv[2], sys.argv[3], session_timeout=6.0)
c.start(None, "127.0.0.1", 1, {"pull": "tcp://127.0.0.1:9", "pub": "tcp://127.0.0.1:9"})
threads = lambda: sorted(t.name for t in threading.enumerate() if "redis" in t.name)
out = {"started": ["redis" in sys.modules, threads()], "has_redis": c.has_redis}
done = threading.Event()
req = c.lock("k", 5.0, 5.0, "redis", lambda held: (held.release(), done.set()), lambda h: None)
out["locked"] = [done.wait(10), "redis" in sys.modules, threads()]
c.stop()
print(json.dumps(out))
"""


def test_a_node_that_never_locks_never_loads_redis(servers: dict[str, str], cluster: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", CHILD, servers["zk"], servers["redis"], cluster],
                       env=env, capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["has_redis"] is True
    assert out["started"] == [False, []]  # checked at start, yet nothing of redis-py loaded
    ok, loaded, threads = out["locked"]
    assert ok and loaded and threads == ["coord-redis-locks", "coord-redis-pubsub"]


def test_start_is_not_stopped_by_an_unreachable_redis(servers: dict[str, str],
                                                     cluster: str) -> None:
    """Redis down at start is only logged (it may come up later); a refusal is fatal."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    c = coord.connect(servers["zk"], f"redis://127.0.0.1:{port}/0", cluster, session_timeout=6.0)
    try:
        c.start(None, "127.0.0.1", 1, {"pull": "tcp://127.0.0.1:9", "pub": "tcp://127.0.0.1:9"})
        assert c.has_redis
    finally:
        c.stop()


@pytest.mark.parametrize("url", ["redis://h:notaport/0", "redis://h:6379/x", "http://h:6379/0"])
def test_a_malformed_url_is_refused_when_the_coordinator_is_made(url: str) -> None:
    with pytest.raises(ValueError):
        coord.connect(None, url, "c")
