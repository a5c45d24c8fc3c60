"""Harbor ports are bound before they are advertised (issue 15: the port race).

The old way picked a free port with a throw-away socket, advertised it, and
bound it later: another process could take it in between and the node died
with "Address already in use". A Listener binds first and advertises what
its sockets got; the transport adopts the bound sockets and binds nothing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from harbor import Listener, PeerInfo, TransportClosed, TransportError, ZmqTransport
from harbor.transport import DEFAULT_MAX_FRAME


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _grab_in_other_process(port: int) -> str:
    """Try to bind ``port`` from another process: "bound" or the errno name."""
    code = (
        "import socket,errno,sys\n"
        "s=socket.socket()\n"
        "try:\n"
        f"    s.bind(('127.0.0.1',{port})); s.listen(); print('bound')\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


@pytest.fixture
def listener() -> Iterator[Listener]:
    lst = Listener("127.0.0.1", max_frame=DEFAULT_MAX_FRAME)
    yield lst
    lst.close()


def test_advertised_ports_are_held_by_the_listener(listener: Listener) -> None:
    ep = listener.endpoints
    assert set(ep) == {"pull", "pub"}
    ports = {_port(ep["pull"]), _port(ep["pub"])}
    assert ports == set(listener.ports) and 0 not in ports and len(ports) == 2
    # The attack: another process takes an advertised port before the transport starts.
    for port in ports:
        assert _grab_in_other_process(port) == "EADDRINUSE"


def test_start_adopts_the_bound_sockets_and_messages_flow(listener: Listener) -> None:
    got: list[tuple[int, int, list[object]]] = []
    arrived = threading.Event()

    def deliver(src: int, inc: int, msgs: list[object]) -> None:
        got.append((src, inc, msgs))
        arrived.set()

    b = ZmqTransport(2, 201, deliver, lambda *a: None, lambda *a: None, listener=listener)
    a = ZmqTransport(1, 101, lambda *a: None, lambda *a: None, lambda *a: None)
    with a, b:
        assert b.endpoints == listener.endpoints  # advertised == bound, nothing re-picked
        a.set_peers({2: PeerInfo(201, **b.endpoints)})
        b.set_peers({1: PeerInfo(101, **a.endpoints)})
        a.send(2, (7, 8, 0, 0, "hi"))
        assert arrived.wait(10)
    assert got == [(1, 101, [(7, 8, 0, 0, "hi")])]


def test_a_competitor_on_a_fixed_port_fails_before_joining_not_at_start() -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        # Bound while advertising (before membership): a typed error, nothing joined yet.
        with pytest.raises(TransportError, match="cannot bind"):
            Listener("127.0.0.1", pull_port=taken, max_frame=DEFAULT_MAX_FRAME)


def test_a_listener_is_adopted_once_and_close_frees_its_ports() -> None:
    lst = Listener("127.0.0.1", max_frame=DEFAULT_MAX_FRAME)
    t = ZmqTransport(1, 101, lambda *a: None, lambda *a: None, lambda *a: None, listener=lst)
    t.start()
    try:
        other = ZmqTransport(2, 201, lambda *a: None, lambda *a: None, lambda *a: None,
                             listener=lst)
        with pytest.raises(TransportClosed):
            other.start()
        lst.close()  # adopted: the transport owns the sockets, close leaves them alone
        assert _grab_in_other_process(lst.ports[0]) == "EADDRINUSE"
    finally:
        t.stop()
    unused = Listener("127.0.0.1", max_frame=DEFAULT_MAX_FRAME)
    ports = unused.ports
    never = ZmqTransport(3, 301, lambda *a: None, lambda *a: None, lambda *a: None,
                         listener=unused)
    never.stop()  # stopped before start: the listener is unbound
    assert [_grab_in_other_process(p) for p in ports] == ["bound", "bound"]


def test_wildcard_bind_needs_an_advertised_host() -> None:
    with pytest.raises(ValueError, match="advertise_host"):
        Listener("0.0.0.0", max_frame=DEFAULT_MAX_FRAME)
    lst = Listener("0.0.0.0", advertise_host="127.0.0.1", max_frame=DEFAULT_MAX_FRAME)
    try:
        assert lst.endpoints["pull"].startswith("tcp://127.0.0.1:")
    finally:
        lst.close()
