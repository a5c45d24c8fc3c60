"""Redis locks through the embedded backend, via redis:// and a real Sentinel."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis
from coord_helpers import take, wait_for

import coord

pytestmark = pytest.mark.integration

SENTINEL_PORT = 26390


@pytest.fixture
def sentinel(tmp_path, servers):
    port = int(servers["redis"].rsplit(":", 1)[1].split("/")[0])
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {SENTINEL_PORT}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor skymesh 127.0.0.1 {port} 1\n"
        "sentinel down-after-milliseconds skymesh 60000\n"
    )
    with open(tmp_path / "sentinel.log", "wb") as log:
        proc = subprocess.Popen(
            ["redis-server", str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
        )
    r = redis.Redis(port=SENTINEL_PORT)
    try:
        wait_for(lambda: _ping(r), timeout=30, what="sentinel up")
        yield f"redis+sentinel://127.0.0.1:{SENTINEL_PORT}/skymesh/0"
    finally:
        r.close()
        proc.terminate()
        proc.wait(20)


def _ping(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False


@pytest.mark.parametrize("url_kind", ["plain", "sentinel"])
def test_embedded_backend_with_redis_locks(request, servers, cluster, url_kind):
    url = servers["redis"] if url_kind == "plain" else request.getfixturevalue("sentinel")
    a = coord.connect(None, url, cluster)
    b = coord.connect(None, url, cluster)
    try:
        a.start(None, "localhost", 1, {})
        b.start(None, "localhost", 2, {})
        _, w1 = take(a, "k", "redis")
        h1 = w1.wait()
        assert h1.backend == "redis"
        _, w2 = take(b, "k", "redis", wait=20)
        time.sleep(0.3)
        assert not w2.done.is_set()  # a different coordinator, same Redis lock
        h1.release()
        h2 = w2.wait()
        assert h2.fence > h1.fence
        h2.release()
        _, w3 = take(a, "k", "zk")  # "zk" on the embedded backend: in-process
        assert w3.wait().backend == "memory"
    finally:
        a.stop()
        b.stop()


def test_bad_urls():
    with pytest.raises(ValueError):
        coord.connect(None, "http://x", "c")
    with pytest.raises(ValueError):
        coord.connect(None, "redis+sentinel://nohost/m", "c")
