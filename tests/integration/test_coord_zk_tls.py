"""ZooKeeper over TLS: a ZooKeeper started here serves only a TLS port (Netty, PEM stores).

The node joins with the right CA and client certificate (and digest
credentials on top); a client trusting another CA, or without a client
certificate, fails with a ``CoordAuthError`` naming the TLS handshake.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from trust_servers import Pki, make_pki, zookeeper_tls

import coord
from coord.observer import ClusterView

pytestmark = pytest.mark.integration
AUTH = "digest:skymesh-tls:tls and digest"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def zk_tls(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[str]:
    srv, port = zookeeper_tls(tmp_path_factory.mktemp("zk-tls"), pki)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.stop()


def _files(pki: Pki, ca: Path | None = None, cert: bool = True) -> coord.TlsFiles:
    if not cert:
        return coord.TlsFiles(str(ca or pki.ca))
    return coord.TlsFiles(str(ca or pki.ca), str(pki.client_cert), str(pki.client_key))


def test_join_over_tls_with_digest(zk_tls: str, pki: Pki) -> None:
    c = coord.connect(zk_tls, None, "tlsdemo", 4.0, zk_auth=AUTH, zk_tls=_files(pki))
    try:
        c.start(1, "localhost", os.getpid(), {})
        c.register_name("svc", 0x100)
        with ClusterView(zk_tls, "tlsdemo", auth=AUTH, tls=_files(pki)) as view:
            assert list(view.members()) == [1]
            assert view.names() == {"svc": 0x100}
        with (
            pytest.raises(coord.CoordAuthError),
            ClusterView(zk_tls, "tlsdemo", tls=_files(pki)) as view,
        ):
            view.members()  # TLS alone is not the cluster identity
    finally:
        c.stop()


@pytest.mark.parametrize("attack", ["stranger_ca", "no_client_cert"])
def test_tls_refusal_names_the_handshake(zk_tls: str, pki: Pki, attack: str) -> None:
    files = _files(pki, ca=pki.other_ca) if attack == "stranger_ca" else _files(pki, cert=False)
    with (
        pytest.raises(coord.CoordAuthError, match="TLS handshake with ZooKeeper"),
        ClusterView(zk_tls, "tlsdemo", 2.0, auth=AUTH, tls=files),
    ):
        pass
    c = coord.connect(zk_tls, None, "tlsdemo", 4.0, zk_auth=AUTH, zk_tls=files)
    try:
        t0 = time.monotonic()
        with pytest.raises(coord.CoordAuthError, match="TLS handshake with ZooKeeper"):
            c.start(1, "localhost", os.getpid(), {})
        # Named by the start's own probe, not after kazoo's 15 s connect timeout.
        assert time.monotonic() - t0 < 10
    finally:
        c.stop()


def test_plain_client_cannot_use_the_tls_port(zk_tls: str) -> None:
    with pytest.raises(coord.CoordUnavailable), ClusterView(zk_tls, "tlsdemo", 2.0):
        pass
