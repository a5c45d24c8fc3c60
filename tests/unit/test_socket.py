"""The socket thread and the socket half of the Service API, on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from node import CallError, Node, Service, expose
from tests.conftest import wait_for


class EchoServer(Service):
    """Echoes every byte back; records the events it saw."""

    def on_start(self) -> None:
        self.events: list = []
        self.lid = self.listen("127.0.0.1", 0)

    @expose
    def port(self):
        addr = self.socket_address(self.lid)
        assert addr is not None
        return addr[1]

    @expose
    def get(self):
        return list(self.events)

    @expose
    def pause_all(self, paused):
        for e in self.events:
            if e[0] == "accept":
                if paused:
                    self.socket_pause(e[2])
                else:
                    self.socket_resume(e[2])

    def on_socket_accept(self, listen_id, sock_id, addr):
        self.events.append(("accept", listen_id, sock_id))

    def on_socket_data(self, sock_id, data):
        self.socket_write(sock_id, data)

    def on_socket_close(self, sock_id, reason):
        self.events.append(("close", sock_id, reason))


class Client(Service):
    """Connects out, collects what comes back."""

    def on_start(self) -> None:
        self.got = bytearray()
        self.closed: list = []
        self.warnings: list = []

    @expose
    async def open(self, port, timeout=None):
        return await self.connect("127.0.0.1", port, timeout=timeout)

    @expose
    def send_bytes(self, sid, data):
        self.socket_write(sid, data)

    @expose
    def shut(self, sid):
        self.socket_close(sid)

    @expose
    def received(self):
        return bytes(self.got)

    @expose
    def state(self):
        return {"closed": list(self.closed), "warnings": list(self.warnings)}

    def on_socket_data(self, sock_id, data):
        self.got += data

    def on_socket_close(self, sock_id, reason):
        self.closed.append((sock_id, reason))

    def on_socket_warning(self, sock_id, buffered):
        self.warnings.append(buffered)


def test_service_to_service_echo_and_close_events(node: Node) -> None:
    srv = node.newservice(EchoServer)
    cli = node.newservice(Client)
    sid = node.call(cli, "open", node.call(srv, "port"))
    payload = bytes(range(256)) * 1000
    node.call(cli, "send_bytes", sid, payload)
    wait_for(lambda: len(node.call(cli, "received")) == len(payload))
    assert node.call(cli, "received") == payload
    node.call(cli, "shut", sid)
    wait_for(lambda: node.call(cli, "state")["closed"] == [(sid, "closed")])
    events = wait_for(lambda: [e for e in node.call(srv, "get") if e[0] == "close"])
    assert events[0][2] == "eof"  # the server saw the peer hang up, exactly once
    assert len(events) == 1


def test_plain_client_and_pause_resume(node: Node) -> None:
    srv = node.newservice(EchoServer)
    port = node.call(srv, "port")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(b"hello")
        assert c.recv(100) == b"hello"
        wait_for(lambda: node.call(srv, "get"))
        node.call(srv, "pause_all", True)
        time.sleep(0.05)
        c.sendall(b"later")
        c.settimeout(0.2)
        with pytest.raises(TimeoutError):
            c.recv(100)  # paused: nothing is read, so nothing echoes
        node.call(srv, "pause_all", False)
        c.settimeout(5)
        assert c.recv(100) == b"later"


def test_connect_refused_is_a_typed_error(node: Node) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nobody listens there now
    cli = node.newservice(Client)
    with pytest.raises(CallError) as info:
        node.call(cli, "open", port)
    assert info.value.remote_type == "SocketError" and "refused" in str(info.value)


def test_listen_on_a_used_port_is_a_typed_error(node: Node) -> None:
    srv = node.newservice(EchoServer)
    port = node.call(srv, "port")

    class Second(Service):
        @expose
        def try_listen(self, p):
            self.listen("127.0.0.1", p)

    h = node.newservice(Second)
    with pytest.raises(CallError) as info:
        node.call(h, "try_listen", port)
    assert info.value.remote_type == "SocketError"


def test_high_water_warning_and_drain(node: Node) -> None:
    # A peer that never reads: the socket thread buffers, warns, and the worker never blocks.
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # inherited by the peer
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    port = lsock.getsockname()[1]
    cli = node.newservice(Client)
    sid = node.call(cli, "open", port)
    peer, _ = lsock.accept()
    chunk = b"x" * (256 * 1024)
    t0 = time.monotonic()
    for _ in range(32):  # 8 MiB, far past the kernel buffers
        node.call(cli, "send_bytes", sid, chunk)
    assert time.monotonic() - t0 < 5
    warnings = wait_for(lambda: node.call(cli, "state")["warnings"])
    assert warnings[0] >= 1 << 20
    total = 0
    peer.settimeout(5)
    while total < 32 * len(chunk):
        total += len(peer.recv(1 << 20))
    wait_for(lambda: node.call(cli, "state")["warnings"][-1] == 0)  # drained
    peer.close()
    lsock.close()
    wait_for(lambda: node.call(cli, "state")["closed"])


def test_owner_transfer_and_sockets_of_dead_owner_are_closed(node: Node) -> None:
    class Holder(Service):
        def on_start(self) -> None:
            self.data: list = []

        @expose
        async def open(self, port):
            return await self.connect("127.0.0.1", port)

        @expose
        def give(self, sid, to):
            self.socket_transfer(sid, to)

        @expose
        def got(self):
            return b"".join(self.data)

        def on_socket_data(self, sock_id, data):
            self.data.append(data)

    lsock = socket.create_server(("127.0.0.1", 0))
    a = node.newservice(Holder)
    b = node.newservice(Holder)
    sid = node.call(a, "open", lsock.getsockname()[1])
    peer, _ = lsock.accept()
    node.call(a, "give", sid, b)
    time.sleep(0.05)
    peer.sendall(b"to-b")
    wait_for(lambda: node.call(b, "got") == b"to-b")
    assert node.call(a, "got") == b""
    node.kill(b)
    peer.settimeout(5)
    assert peer.recv(10) == b""  # the sweep closed the socket of the ended owner
    peer.close()
    lsock.close()


def test_connect_timeout_and_stop_leaves_nothing(log_path) -> None:
    with Node.standalone(workers=2, log_file=str(log_path)) as n:
        cli = n.newservice(Client)
        # A listener whose accept queue is full: Linux drops further SYNs, connect hangs.
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        time.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(CallError) as info:
            n.call(cli, "open", port, 0.3)
        assert info.value.remote_type == "SocketError" and "timed out" in str(info.value)
        assert time.monotonic() - t0 < 3
        # the abandoned attempt was closed
        wait_for(lambda: n.sockets_stats()["sockets"] == 0)
        lsock.accept()[0].close()  # room in the queue again: a connect now succeeds
        assert isinstance(n.call(cli, "open", port, 5.0), int)
        assert n.sockets_stats()["sockets"] == 1
        filler.close()
        lsock.close()
    assert not [t for t in threading.enumerate() if t.name == "skymesh-socket"]


def test_events_during_async_on_start_are_deferred(node: Node) -> None:
    class Slow(Service):
        async def on_start(self) -> None:
            self.seen: list = []
            self.lid = self.listen("127.0.0.1", 0)
            self.port = self.socket_address(self.lid)[1]  # type: ignore[index]
            await self.sleep(0.3)
            self.ready = True

        @expose
        def get(self):
            return self.seen

        def on_socket_accept(self, listen_id, sock_id, addr):
            self.seen.append(("accept", self.ready))

    # newservice blocks until on_start ends, so connect from a side thread meanwhile.
    ports: list = []

    def connector() -> None:
        deadline = time.monotonic() + 5
        while not ports and time.monotonic() < deadline:
            svc = [s for s in node.iter_services() if type(s).__name__ == "Slow"]
            if svc and hasattr(svc[0], "port"):
                ports.append(svc[0].port)
            time.sleep(0.01)
        c = socket.create_connection(("127.0.0.1", ports[0]))
        time.sleep(0.5)
        c.close()

    t = threading.Thread(target=connector)
    t.start()
    h = node.newservice(Slow)
    t.join()
    assert wait_for(lambda: node.call(h, "get")) == [("accept", True)]
