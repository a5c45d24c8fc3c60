"""Redis locks through a password, an ACL user limited to the cluster's keys, TLS, and Sentinels.

Each fixture starts its own redis-server (or Sentinel) on a free loopback port
and stops it. The attacks: no password, a wrong password, a user reaching
outside its key prefix, a client that trusts another CA, a client without a
certificate. Each must fail with a ``CoordAuthError`` (a ``CoordUnavailable``)
naming the cause, and never let a lock through.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from coord_helpers import take
from trust_servers import Pki, Server, free_port, make_pki, redis_server

import coord

pytestmark = pytest.mark.integration

PW = "s3cret-default"
USER_PW = "s3cret-user"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _pings(**kw: Any) -> Callable[[], bool]:
    def ping() -> bool:
        r = redis.Redis(host="127.0.0.1", socket_timeout=1, **kw)
        try:
            return bool(r.ping())
        except redis.RedisError:
            return False
        finally:
            r.close()

    return ping


def _acl_user(cluster: str) -> str:
    # Only the cluster's lock keys and release channel, no admin or dangerous commands.
    return (
        f"user skymesh on >{USER_PW} resetkeys ~skymesh:{cluster}:* "
        f"resetchannels &skymesh:{cluster}:* +@all -@dangerous\n"
    )


@pytest.fixture
def locked_redis(tmp_path: Path, cluster: str) -> Iterator[int]:
    """A redis-server with requirepass and an ACL user limited to ``cluster``'s keys."""
    port = free_port()
    srv = redis_server(
        tmp_path / "redis",
        f"port {port}\nrequirepass {PW}\n{_acl_user(cluster)}",
        _pings(port=port, password=PW),
    )
    yield port
    srv.stop()


@pytest.fixture
def tls_redis(tmp_path: Path, pki: Pki) -> Iterator[int]:
    """A redis-server on TLS only (``port 0``), client certificates required, requirepass."""
    port = free_port()
    srv = redis_server(
        tmp_path / "redis-tls",
        f"port 0\ntls-port {port}\ntls-cert-file {pki.server_cert}\n"
        f"tls-key-file {pki.server_key}\ntls-ca-cert-file {pki.ca}\n"
        f"tls-auth-clients yes\nrequirepass {PW}\n",
        _pings(
            port=port,
            password=PW,
            ssl=True,
            ssl_ca_certs=str(pki.ca),
            ssl_certfile=str(pki.client_cert),
            ssl_keyfile=str(pki.client_key),
        ),
    )
    yield port
    srv.stop()


def _lock_round(url: str, cluster: str, **kw: Any) -> None:
    """Two coordinators take the same lock in turn: fences grow, no overlap."""
    a = coord.connect(None, url, cluster, **kw)
    b = coord.connect(None, url, cluster, **kw)
    try:
        a.start(None, "localhost", 1, {})
        b.start(None, "localhost", 2, {})
        _, w1 = take(a, "k", "redis")
        h1 = w1.wait()
        assert h1.backend == "redis" and h1.valid, h1
        _, w2 = take(b, "k", "redis", wait=20)
        time.sleep(0.3)
        assert not w2.done.is_set()
        h1.release()
        h2 = w2.wait()
        assert h2.fence > h1.fence
        h2.release()
    finally:
        a.stop()
        b.stop()


def _refused(url: str, cluster: str, match: str, **kw: Any) -> str:
    c = coord.connect(None, url, cluster, **kw)
    try:
        with pytest.raises(coord.CoordUnavailable, match=match) as info:
            c.start(None, "localhost", 1, {})
        assert isinstance(info.value, coord.CoordAuthError)
        return str(info.value)
    finally:
        c.stop()


def test_password_and_acl_user(locked_redis: int, cluster: str) -> None:
    port = locked_redis
    _lock_round(f"redis://:{PW}@127.0.0.1:{port}/0", cluster)
    _lock_round(f"redis://skymesh:{USER_PW}@127.0.0.1:{port}/0", cluster)
    msg = _refused(f"redis://127.0.0.1:{port}/0", cluster, "authentication failed")
    assert "Redis refused" in msg
    msg = _refused(f"redis://:wrong-pw@127.0.0.1:{port}/0", cluster, "authentication failed")
    assert "wrong-pw" not in msg
    _refused(f"redis://skymesh:wrong-pw@127.0.0.1:{port}/0", cluster, "authentication failed")


def test_acl_user_cannot_leave_its_prefix(locked_redis: int, cluster: str) -> None:
    port = locked_redis
    url = f"redis://skymesh:{USER_PW}@127.0.0.1:{port}/0"
    other = coord.connect(None, url, "othercluster")  # keys outside ~skymesh:<cluster>:*
    try:
        other.start(None, "localhost", 1, {})  # PING is allowed; the keys are not
        t0 = time.monotonic()
        _, w = take(other, "k", "redis", wait=20)
        result = w.wait()
        assert isinstance(result, coord.CoordAuthError), result
        assert "permission denied" in str(result)
        assert time.monotonic() - t0 < 10  # failed at once, not after the wait ran out
    finally:
        other.stop()
    r = redis.Redis(port=port, username="skymesh", password=USER_PW)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.get("skymesh:othercluster:lock:k")
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.config_get("requirepass")
    finally:
        r.close()


def test_tls_with_url_parameters_and_config_files(tls_redis: int, pki: Pki, cluster: str) -> None:
    port = tls_redis
    q = f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
    _lock_round(f"rediss://:{PW}@127.0.0.1:{port}/0?{q}", cluster)
    files = coord.TlsFiles(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    _lock_round(f"rediss://:{PW}@127.0.0.1:{port}/0", cluster, redis_tls=files)


def test_tls_refusals_name_the_cause(tls_redis: int, pki: Pki, cluster: str) -> None:
    port = tls_redis
    client = (str(pki.client_cert), str(pki.client_key))
    stranger = coord.TlsFiles(str(pki.other_ca), *client)
    _refused(f"rediss://:{PW}@127.0.0.1:{port}/0", cluster, "TLS handshake failed",
             redis_tls=stranger)  # fmt: skip
    no_cert = coord.TlsFiles(str(pki.ca))
    _refused(f"rediss://:{PW}@127.0.0.1:{port}/0", cluster, "TLS handshake failed",
             redis_tls=no_cert)  # fmt: skip
    right = coord.TlsFiles(str(pki.ca), *client)
    _refused(f"rediss://:wrong@127.0.0.1:{port}/0", cluster, "authentication failed",
             redis_tls=right)  # fmt: skip
    with pytest.raises(ValueError, match="rediss://"):
        coord.connect(None, f"redis://127.0.0.1:{port}/0", cluster, redis_tls=right)


def _sentinel(master_port: int, auth: str, tls: str = "") -> tuple[str, int]:
    port = free_port()
    listen = f"port 0\ntls-port {port}\n" if tls else f"port {port}\n"
    conf = (
        f"{listen}{tls}{auth}"
        f"sentinel monitor skymesh 127.0.0.1 {master_port} 1\n"
        "sentinel down-after-milliseconds skymesh 60000\n"
    )
    return conf, port


@pytest.fixture
def sentinels(tmp_path: Path, locked_redis: int) -> Iterator[list[int]]:
    """Two Sentinels with their own requirepass/ACL user, speaking to the master as that user."""
    auth = (
        f"requirepass {PW}\nuser skymesh on >{USER_PW} +@all\n"
        f"sentinel auth-user skymesh skymesh\nsentinel auth-pass skymesh {USER_PW}\n"
    )
    made: list[Server] = []
    ports = []
    try:
        for i in range(2):
            conf, port = _sentinel(locked_redis, auth)
            made.append(
                redis_server(tmp_path / f"sentinel{i}", conf, _pings(port=port, password=PW))
            )
            ports.append(port)
        yield ports
    finally:
        for s in made:
            s.stop()


def test_sentinel_urls_carry_user_and_password_to_sentinels(
    sentinels: list[int], cluster: str
) -> None:
    hosts = ",".join(f"127.0.0.1:{p}" for p in sentinels)
    # The Sentinels themselves refuse anonymous clients.
    anon = redis.Redis(port=sentinels[0])
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            anon.ping()
    finally:
        anon.close()
    _lock_round(f"redis+sentinel://skymesh:{USER_PW}@{hosts}/skymesh/0", cluster)
    msg = _refused(f"redis+sentinel://skymesh:nope@{hosts}/skymesh/0", cluster,
                   "authentication failed")  # fmt: skip
    assert "nope" not in msg
    _refused(f"redis+sentinel://{hosts}/skymesh/0", cluster, "authentication failed")


@pytest.fixture
def tls_sentinel(tmp_path: Path, pki: Pki, tls_redis: int) -> Iterator[int]:
    """A Sentinel on TLS only, talking TLS (with a client certificate) to the TLS master."""
    tls = (
        f"tls-cert-file {pki.server_cert}\ntls-key-file {pki.server_key}\n"
        f"tls-client-cert-file {pki.client_cert}\ntls-client-key-file {pki.client_key}\n"
        f"tls-ca-cert-file {pki.ca}\ntls-auth-clients yes\ntls-replication yes\n"
    )
    auth = f"requirepass {PW}\nsentinel auth-pass skymesh {PW}\n"
    conf, port = _sentinel(tls_redis, auth, tls)
    srv = redis_server(
        tmp_path / "sentinel-tls",
        conf,
        _pings(
            port=port,
            password=PW,
            ssl=True,
            ssl_ca_certs=str(pki.ca),
            ssl_certfile=str(pki.client_cert),
            ssl_keyfile=str(pki.client_key),
        ),
    )
    yield port
    srv.stop()


def test_sentinel_over_tls(tls_sentinel: int, pki: Pki, cluster: str) -> None:
    url = f"rediss+sentinel://:{PW}@127.0.0.1:{tls_sentinel}/skymesh/0"
    files = coord.TlsFiles(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    _lock_round(url, cluster, redis_tls=files)
    q = f"ssl_ca_certs={pki.ca}&ssl_certfile={pki.client_cert}&ssl_keyfile={pki.client_key}"
    _lock_round(f"{url}?{q}", cluster)
    stranger = coord.TlsFiles(str(pki.other_ca), str(pki.client_cert), str(pki.client_key))
    _refused(url, cluster, "TLS handshake failed", redis_tls=stranger)


def test_node_with_wrong_redis_password_prints_one_line(
    servers: dict[str, str], locked_redis: int, cluster: str
) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    env.update(
        PYTHONPATH=str(root),
        SKYMESH_ZK_HOSTS=servers["zk"],
        SKYMESH_CLUSTER=cluster,
        SKYMESH_REDIS_URL=f"redis://skymesh:not-{USER_PW}@127.0.0.1:{locked_redis}/0",
    )
    p = subprocess.run(
        [sys.executable, "-m", "node.cli", "node"],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "cannot join cluster" in lines[0] and "authentication failed" in lines[0]
    assert USER_PW not in p.stdout + p.stderr
