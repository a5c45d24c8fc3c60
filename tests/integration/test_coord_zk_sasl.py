"""``zk_auth = "sasl:user:password"`` against a ZooKeeper set up for SASL DIGEST-MD5 here."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from trust_servers import zookeeper_sasl

import coord
from coord.observer import ClusterView

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("puresasl") is None,
        reason="SASL needs the pure-sasl package (pip install 'skymesh[sasl]')",
    ),
]
AUTH = "sasl:skymesh:sasl-secret"


@pytest.fixture(scope="module")
def zk_sasl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    srv, port = zookeeper_sasl(
        tmp_path_factory.mktemp("zk-sasl"), {"skymesh": "sasl-secret", "other": "other-secret"}
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        srv.stop()


def test_sasl_identity_owns_the_tree(zk_sasl: str) -> None:
    c = coord.connect(zk_sasl, None, "sasldemo", 4.0, zk_auth=AUTH)
    try:
        c.start(1, "localhost", os.getpid(), {})
        c.config_set("k", 1)
        with ClusterView(zk_sasl, "sasldemo", auth=AUTH) as view:
            assert list(view.members()) == [1]
            acls, _ = view._zk.get_acls("/skymesh/sasldemo/config/k")
            assert [(a.id.scheme, a.id.id, a.perms) for a in acls] == [("sasl", "skymesh", 31)]
            assert view.config_get("k") == 1
        for who in (None, "sasl:other:other-secret"):
            opts = {} if who is None else coord.ZkAuth.parse(who).kazoo_kwargs()
            opts.pop("default_acl", None)
            zk = KazooClient(hosts=zk_sasl, timeout=5, **opts)
            zk.start(10)
            try:
                for path in ("", "/nodes", "/nodes/1", "/config/k"):
                    with pytest.raises(NoAuthError):
                        zk.get(f"/skymesh/sasldemo{path}")
                with pytest.raises(NoAuthError):
                    zk.set("/skymesh/sasldemo/config/k", b"2")
            finally:
                zk.stop()
                zk.close()
        c2 = coord.connect(zk_sasl, None, "sasldemo", 4.0, zk_auth="sasl:other:other-secret")
        try:
            with pytest.raises(coord.CoordAuthError, match="denied access"):
                c2.start(2, "localhost", 1, {})
        finally:
            c2.stop()
    finally:
        c.stop()


def test_wrong_sasl_password_is_refused_clearly(zk_sasl: str) -> None:
    c = coord.connect(zk_sasl, None, "sasldemo", 4.0, zk_auth="sasl:skymesh:wrong")
    try:
        with pytest.raises(coord.CoordAuthError, match="rejected") as info:
            c.start(1, "localhost", 1, {})
        assert "wrong" not in str(info.value)
    finally:
        c.stop()
