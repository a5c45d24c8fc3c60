"""``.gate``: framing, one agent per client, and bad clients that cost only themselves."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from node import Node, ServiceStartError, expose
from node.builtins import Agent, Gate, pack
from tests.conftest import wait_for


class EchoAgent(Agent):
    def on_connect(self, *args) -> None:
        self.frames = 0

    def on_client(self, data):
        if data == b"boom":
            raise ValueError("garbage")
        self.frames += 1
        self.send_client(data)

    @expose
    def count(self):
        return self.frames


class SlowAgent(Agent):
    """Takes 0.5 ms per frame: its mailbox fills up under a fast client."""

    def on_client(self, data):
        time.sleep(0.0005)
        self.send_client(data)


def recv_frame(s: socket.socket) -> bytes:
    head = _exactly(s, 2)
    return _exactly(s, struct.unpack(">H", head)[0])


def _exactly(s: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def closed_by_peer(s: socket.socket, timeout: float = 5.0) -> bool:
    s.settimeout(timeout)
    try:
        while True:
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def start_gate(node: Node, agent: type = EchoAgent, **opts) -> tuple[int, int]:
    gate = node.newservice(Gate, agent, "127.0.0.1", 0, opts)
    return gate, node.call(gate, "address")[1]


def test_echo_through_agents_many_clients_while_bad_ones_misbehave(node: Node, log_path) -> None:
    gate, port = start_gate(node, max_frame=1024, idle_timeout=0.6)
    errors: list = []

    def good(i: int) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                for j in range(20):
                    msg = f"client {i} message {j}".encode()
                    s.sendall(pack(msg))
                    assert recv_frame(s) == msg
                    time.sleep(0.01)
                # keep-alive frames every 0.3 s: busy, so never idle
                for _ in range(3):
                    time.sleep(0.3)
                    s.sendall(pack(b"still here"))
                    assert recv_frame(s) == b"still here"
        except Exception as exc:
            errors.append((i, exc))

    bad = []
    oversize = socket.create_connection(("127.0.0.1", port))
    oversize.sendall(struct.pack(">H", 60000) + b"x" * 100)
    garbage = socket.create_connection(("127.0.0.1", port))
    garbage.sendall(pack(b"boom"))
    half_open = socket.create_connection(("127.0.0.1", port))  # connects, never says a thing
    slowloris = socket.create_connection(("127.0.0.1", port))
    bad += [oversize, garbage, half_open, slowloris]

    threads = [threading.Thread(target=good, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    slowloris.sendall(struct.pack(">H", 500))
    for _ in range(6):  # one byte every 0.2 s: never a complete frame
        time.sleep(0.2)
        try:
            slowloris.sendall(b"y")
        except OSError:
            break
    for t in threads:
        t.join(30)
    assert not errors, errors[:3]
    for s in bad:
        assert closed_by_peer(s), s
        s.close()
    wait_for(lambda: node.call(gate, "stat")["clients"] == 0)
    text = wait_for(
        lambda: log_path.read_text().count("closing client") >= 4 and log_path.read_text()
    )
    lines = [x for x in text.splitlines() if "closing client" in x]
    assert len(lines) == 4, lines  # one line per bad client
    assert any("max_frame" in x for x in lines)
    assert any("ValueError: garbage" in x for x in lines)
    assert any("no data" in x for x in lines)
    assert any("partial frame" in x for x in lines)
    # agents of the clients that left have exited
    wait_for(lambda: not [s for s in node.iter_services() if isinstance(s, EchoAgent)])


def test_connection_limit(node: Node, log_path) -> None:
    gate, port = start_gate(node, max_clients=2)
    a = socket.create_connection(("127.0.0.1", port))
    b = socket.create_connection(("127.0.0.1", port))
    wait_for(lambda: node.call(gate, "stat")["clients"] == 2)
    c = socket.create_connection(("127.0.0.1", port))
    assert closed_by_peer(c)
    for s in (a, b):
        s.sendall(pack(b"ok"))
        assert recv_frame(s) == b"ok"
    assert node.call(gate, "stat")["rejected"] == 1
    for s in (a, b, c):
        s.close()


def test_backpressure_pauses_reading_while_agent_is_behind(node: Node) -> None:
    gate, port = start_gate(node, SlowAgent, mailbox_limit=8)
    n, size = 600, 1000
    frames = [b"%05d" % i + b"x" * (size - 5) for i in range(n)]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        sender = threading.Thread(target=s.sendall, args=(b"".join(pack(f) for f in frames),))
        sender.start()
        assert wait_for(lambda: node.call(gate, "stat")["paused"] == 1, timeout=5)
        agent = next(x for x in node.iter_services() if isinstance(x, SlowAgent))
        # Bounded by the limit plus one read chunk (64 KiB = 65 frames), not by the client.
        assert len(agent._mailbox.queue) < 8 + 70
        got = [recv_frame(s) for _ in range(n)]
        sender.join()
    assert got == frames  # order kept across pauses


def test_client_that_does_not_read_is_closed(node: Node, log_path) -> None:
    gate, port = start_gate(node)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.connect(("127.0.0.1", port))
    frame = pack(b"z" * 8000)

    def flood() -> None:
        try:
            for _ in range(1000):  # 8 MB of echoes it never reads
                s.sendall(frame)
        except OSError:
            pass

    t = threading.Thread(target=flood)
    t.start()
    wait_for(lambda: "not reading its replies" in log_path.read_text())
    t.join(10)
    assert closed_by_peer(s)
    s.close()
    wait_for(lambda: node.call(gate, "stat")["clients"] == 0)


def test_line_framing_and_agent_close(node: Node) -> None:
    class Shout(Agent):
        def on_client(self, data):
            if data == b"bye":
                self.send_client(b"BYE")
                self.close_client()
            else:
                self.send_client(data.upper())

    gate, port = start_gate(node, Shout, framing="line")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"hello\r\nwor")
        s.sendall(b"ld\nbye\n")
        data = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
    assert data == b"HELLO\nWORLD\nBYE\n"
    wait_for(lambda: node.call(gate, "stat")["clients"] == 0)


def test_bad_options_fail_the_start(node: Node) -> None:
    with pytest.raises(ServiceStartError):
        node.newservice(Gate, EchoAgent, "127.0.0.1", 0, {"nope": 1})
    with pytest.raises(ServiceStartError):
        node.newservice(Gate, EchoAgent, "127.0.0.1", 0, {"framing": "xml"})


def test_agent_subclass_must_not_define_on_start() -> None:
    with pytest.raises(TypeError, match="on_connect"):

        class Wrong(Agent):
            def on_start(self, *args):
                pass


def test_pack_limits() -> None:
    assert pack(b"") == b"\x00\x00"
    with pytest.raises(ValueError):
        pack(b"x" * 65536)
