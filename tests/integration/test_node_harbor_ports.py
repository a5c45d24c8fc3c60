"""A clustered node advertises the harbor ports it has bound (issue 15: the port race)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from harbor import TransportError
from node import Node

pytestmark = pytest.mark.integration


def _grab(port: int) -> str:
    code = (
        "import socket,errno\ns=socket.socket()\ntry:\n"
        f"    s.bind(('127.0.0.1',{port})); print('bound')\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30).stdout.strip()


@pytest.fixture
def znode(servers: dict[str, str], cluster: str, tmp_path) -> Iterator[Node]:
    n = Node(node_id=0, workers=2, cluster=cluster, zk_hosts=servers["zk"],
             session_timeout=6.0, log_file=str(tmp_path / "log"), harbor_peer_timeout=2.5)
    n.start()
    try:
        yield n
    finally:
        n.stop()


def test_advertised_endpoints_are_the_bound_sockets(znode: Node) -> None:
    advertised = znode.coord.members()[znode.node_id].endpoints
    transport = znode._harbor.transport
    assert transport is not None
    assert {k: advertised[k] for k in ("pull", "pub")} == transport.endpoints
    # Another process cannot take them: they were bound before they were advertised.
    for key in ("pull", "pub"):
        assert _grab(int(advertised[key].rsplit(":", 1)[1])) == "EADDRINUSE"
    # The node's silence timeout setting reached the transport.
    assert transport.peer_timeout == 2.5  # type: ignore[attr-defined]


def test_a_taken_fixed_port_fails_before_joining(servers, cluster, tmp_path) -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        port = squatter.getsockname()[1]
        n = Node(node_id=5, workers=1, cluster=cluster, zk_hosts=servers["zk"],
                 pull_port=port, log_file=str(tmp_path / "log"))
        with pytest.raises(TransportError, match="cannot bind"):
            n.start()
        probe = Node(node_id=6, workers=1, cluster=cluster, zk_hosts=servers["zk"],
                     log_file=str(tmp_path / "log2"))
        probe.start()
        try:
            assert 5 not in probe.coord.members()  # never joined with an unusable port
        finally:
            probe.stop()
