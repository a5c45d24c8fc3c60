"""The WebSocket gate against a real client library (``websockets``), raw sockets for the
clients a library would never be, and TLS on both gates with a throwaway CA (``trustme``)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
import time
from pathlib import Path

import pytest
import trustme
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import ClientConnection, connect
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request, TextMessage

from node import Node
from node.builtins import Agent, Gate, WsGate, pack
from tests.conftest import wait_for
from tests.unit.test_gate import closed_by_peer, recv_frame

DISCONNECTS: list[str] = []  # on_disconnect reasons, from every Echo agent


class Echo(Agent):
    """Echoes text as text and bytes as bytes; a few commands for the tests."""

    def on_client(self, data: bytes | str) -> None:
        if data == "boom":
            raise ValueError("garbage")
        if data == "flood":  # 12.8 MB of replies at once
            for _ in range(200):
                self.send_client(b"x" * 65536)
            return
        if data == "bye":
            self.close_client(4000, "asked to")
            return
        self.send_client(data)

    def on_disconnect(self, reason: str) -> None:
        DISCONNECTS.append(reason)


def start(node: Node, gate: type = WsGate, **opts) -> tuple[int, int]:
    handle = node.newservice(gate, Echo, "127.0.0.1", 0, opts)
    return handle, node.call(handle, "address")[1]


def ws(port: int, **kw) -> ClientConnection:
    kw.setdefault("open_timeout", 5)
    kw.setdefault("close_timeout", 5)
    kw.setdefault("ping_interval", None)  # the server's keepalive is under test, not ours
    return connect(f"ws://127.0.0.1:{port}/chat", **kw)


def log_lines(log_path: Path, word: str) -> list[str]:
    text = log_path.read_text() if log_path.exists() else ""
    return [x for x in text.splitlines() if word in x]


def raw_request(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection; everything the gate answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


class RawWs:
    """A WebSocket client that does only what the test says (wsproto, blocking socket)."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host=f"127.0.0.1:{port}", target="/")))
        assert any(isinstance(e, AcceptConnection) for e in self.read())

    def read(self) -> list:
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    def send_text(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text)))


# -- messages ------------------------------------------------------------------------------


def test_text_and_binary_echo_and_a_clean_close(node: Node) -> None:
    DISCONNECTS.clear()
    gate, port = start(node)
    with ws(port) as c:
        c.send("héllo")
        assert c.recv(5) == "héllo"  # text stays text
        c.send(b"\x00\x01\xff")
        assert c.recv(5) == b"\x00\x01\xff"  # binary stays binary
        c.send([b"frag", b"mented"])  # one message in two frames
        assert c.recv(5) == b"fragmented"
        for i in range(100):
            c.send(f"m{i}")
        assert [c.recv(5) for _ in range(100)] == [f"m{i}" for i in range(100)]
    wait_for(lambda: "close 1000" in DISCONNECTS)
    wait_for(lambda: node.call(gate, "stat")["clients"] == 0)
    with ws(port) as c:  # the agent closes: its code reaches the client
        c.send("bye")
        with pytest.raises(ConnectionClosed) as info:
            c.recv(5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000
        assert info.value.rcvd.reason == "asked to"


def test_bad_handshakes_are_refused_and_logged(node: Node, log_path: Path) -> None:
    gate, port = start(node, origins=["http://good.example", "same-origin"], max_header=2048)
    assert raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(
        b"HTTP/1.1 426 ")  # not an upgrade (and no page to serve)
    with pytest.raises(InvalidStatus) as info:
        ws(port, origin="http://evil.example")
    assert info.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as info:
        ws(port)  # no Origin header at all, while an allow-list is set
    assert info.value.response.status_code == 403
    bad_version = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 8\r\nOrigin: http://good.example\r\n\r\n")
    answer = raw_request(port, bad_version)
    assert answer.startswith(b"HTTP/1.1 426 ") and b"sec-websocket-version: 13" in answer.lower()
    assert raw_request(port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 4000 + b"\r\n\r\n"
    assert raw_request(port, huge).startswith(b"HTTP/1.1 431 ")
    with ws(port, origin="http://good.example") as c:  # allowed: listed
        c.send("ok")
        assert c.recv(5) == "ok"
    with ws(port, origin=f"http://127.0.0.1:{port}") as c:  # allowed: same origin as Host
        c.send("ok")
        assert c.recv(5) == "ok"
    lines = wait_for(lambda: len(log_lines(log_path, "refusing client")) >= 6
                     and log_lines(log_path, "refusing client"))
    assert len(lines) == 6, lines
    assert sum("origin" in x for x in lines) == 2
    assert any("not a WebSocket upgrade" in x for x in lines)
    assert any("Sec-WebSocket-Version" in x for x in lines)
    assert any("bad HTTP request" in x for x in lines)
    assert node.call(gate, "stat")["refused"] == 6
    wait_for(lambda: not [s for s in node.iter_services() if isinstance(s, Echo)])


def test_oversize_message_closes_with_1009(node: Node, log_path: Path) -> None:
    gate, port = start(node, max_message=1024)
    with ws(port) as c:
        c.send("x" * 1024)  # exactly the limit passes
        assert c.recv(5) == "x" * 1024
        c.send(b"y" * 100_000)
        with pytest.raises(ConnectionClosed) as info:
            c.recv(5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    with ws(port) as c:  # the limit holds for the message, whatever its frames
        c.send([b"z" * 600, b"z" * 600])
        with pytest.raises(ConnectionClosed) as info:
            c.recv(5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    lines = wait_for(lambda: len(log_lines(log_path, "max_message")) >= 2
                     and log_lines(log_path, "max_message"))
    assert len(lines) == 2
    wait_for(lambda: node.call(gate, "stat")["clients"] == 0)


def test_garbage_and_protocol_errors_cost_only_that_client(node: Node, log_path: Path) -> None:
    gate, port = start(node)
    with ws(port) as good, ws(port) as bad:
        bad.send("boom")  # on_client raises
        with pytest.raises(ConnectionClosed) as info:
            bad.recv(5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        client = WSConnection(ConnectionType.CLIENT)
        raw.sendall(client.send(Request(host="127.0.0.1", target="/")))
        raw.recv(65536)
        raw.sendall(b"\x81\x05hello")  # an unmasked client frame: a protocol error
        data = raw.recv(65536)
        assert data[:1] == b"\x88" and struct.unpack(">H", data[2:4])[0] == 1002
        raw.close()
        good.send("still fine")
        assert good.recv(5) == "still fine"
    assert len(log_lines(log_path, "ValueError: garbage")) == 1
    wait_for(lambda: log_lines(log_path, "protocol error"))


# -- flow control and limits ----------------------------------------------------------------


def test_a_client_that_never_reads_is_cut_off_without_stalling_others(
    node: Node, log_path: Path
) -> None:
    gate, port = start(node)
    stuck = RawWs(port, rcvbuf=4096)
    with ws(port) as good:
        stuck.send_text("flood")  # 12.8 MB of replies; it reads none of them
        worst = 0.0
        t_end = time.monotonic() + 2.0
        i = 0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            good.send(f"ping {i}")
            assert good.recv(5) == f"ping {i}"
            worst = max(worst, time.monotonic() - t0)
            i += 1
        assert worst < 1.0, worst
        lines = wait_for(lambda: log_lines(log_path, "not reading its replies"))
        assert len(lines) == 1
        wait_for(lambda: node.call(gate, "stat")["clients"] == 1)  # only the good one left
        good.send("after")
        assert good.recv(5) == "after"
    stuck.sock.close()


def test_backpressure_pauses_reading_while_the_agent_is_behind(node: Node) -> None:
    class Slow(Agent):
        def on_client(self, data: bytes | str) -> None:
            time.sleep(0.0005)
            self.send_client(data)

    gate = node.newservice(WsGate, Slow, "127.0.0.1", 0, {"mailbox_limit": 8})
    port = node.call(gate, "address")[1]
    n = 600
    seen_paused = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not seen_paused.is_set():
            if node.call(gate, "stat")["paused"]:
                seen_paused.set()
            time.sleep(0.002)

    with ws(port, max_size=None) as c:
        t = threading.Thread(target=watch)
        t.start()
        for i in range(n):
            c.send(b"%05d" % i + b"x" * 995)
        got = [c.recv(10)[:5] for _ in range(n)]
        t.join()
    assert got == [b"%05d" % i for i in range(n)]  # nothing lost, in order
    assert seen_paused.is_set()  # the gate stopped reading while the agent was behind


def test_connection_limit(node: Node, log_path: Path) -> None:
    gate, port = start(node, max_clients=2)
    with ws(port) as a, ws(port) as b:
        wait_for(lambda: node.call(gate, "stat")["clients"] == 2)
        with pytest.raises((InvalidHandshake, ConnectionClosed, OSError)):  # closed, no answer
            with ws(port, open_timeout=2) as c:
                c.recv(2)
        for x in (a, b):
            x.send("ok")
            assert x.recv(5) == "ok"
    assert node.call(gate, "stat")["rejected"] == 1
    assert log_lines(log_path, "connection limit 2 reached")


def test_ping_pong_keeps_a_quiet_client_and_idle_ends_a_dead_one(
    node: Node, log_path: Path
) -> None:
    gate, port = start(node, ping_interval=0.2, idle_timeout=0.8)
    dead = RawWs(port)  # never reads, so never answers the server's pings
    silent_half = socket.create_connection(("127.0.0.1", port))  # never even says hello
    dribbler = RawWs(port)  # a masked 500-byte text frame, one byte every 0.2 s
    dribbler.sock.sendall(b"\x81\xfe\x01\xf4" + b"\x00\x00\x00\x00")
    with ws(port) as quiet:  # the library answers pings: it is quiet, not dead
        pong = quiet.ping(b"are you there")
        assert pong.wait(5)  # our ping, the gate's pong
        for _ in range(10):  # 2 s: > 2 idle timeouts without a message
            time.sleep(0.2)
            with contextlib.suppress(OSError):
                dribbler.sock.sendall(b"y")
        quiet.send("still here")
        assert quiet.recv(5) == "still here"
        events = []
        deadline = time.monotonic() + 5
        while not any(isinstance(e, CloseConnection) for e in events):
            assert time.monotonic() < deadline, events
            events += dead.read()
        assert any(isinstance(e, Ping) for e in events)  # it was asked
        close = next(e for e in events if isinstance(e, CloseConnection))
        assert close.code == 1008
        assert closed_by_peer(silent_half)
    assert closed_by_peer(dribbler.sock)
    lines = log_lines(log_path, "idle for 0.8s")
    assert len(lines) == 3, lines
    assert any("no message or pong" in x for x in lines)
    assert any("no handshake" in x for x in lines)
    assert any("partial message" in x for x in lines)
    dead.sock.close()
    dribbler.sock.close()
    silent_half.close()


def test_node_stop_says_going_away(tmp_path: Path) -> None:
    node = Node.standalone(workers=2, log_file=str(tmp_path / "n.log"))
    try:
        _, port = start(node)
        with ws(port) as c:
            c.send("hi")
            assert c.recv(5) == "hi"
            node.stop()
            with pytest.raises(ConnectionClosed) as info:
                c.recv(5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1001
    finally:
        node.stop()


def test_static_page_and_nothing_else(node: Node, tmp_path: Path) -> None:
    root = tmp_path / "web"
    root.mkdir()
    (root / "index.html").write_text("<h1>lobby</h1>")
    (root / "app.js").write_text("let x = 1;")
    (root / ".secret").write_text("no")
    (tmp_path / "outside.txt").write_text("no")
    _, port = start(node, http_root=str(root))
    page = raw_request(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200 ") and page.endswith(b"<h1>lobby</h1>")
    assert b"content-type: text/html; charset=utf-8" in page.lower()
    js = raw_request(port, b"GET /app.js?v=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert js.startswith(b"HTTP/1.1 200 ") and js.endswith(b"let x = 1;")
    for path in (b"/.secret", b"/../outside.txt", b"/%2e%2e/outside.txt", b"/nope"):
        answer = raw_request(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 404 "), (path, answer)
    answer = raw_request(port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 405 ")
    with ws(port) as c:  # the same port upgrades too
        c.send("hi")
        assert c.recv(5) == "hi"


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(ca: trustme.CA, tmp_path: Path) -> dict[str, str]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    crt, key = tmp_path / "gate.crt", tmp_path / "gate.key"
    cert.cert_chain_pems[0].write_to_path(str(crt))
    cert.private_key_pem.write_to_path(str(key))
    return {"tls_cert": str(crt), "tls_key": str(key)}


def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


def test_wss_with_the_test_ca(node: Node, ca: trustme.CA, cert_files, log_path: Path) -> None:
    gate, port = start(node, **cert_files)
    plain = socket.create_connection(("127.0.0.1", port))  # speaks no TLS at all
    plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with connect(f"wss://127.0.0.1:{port}/", ssl=client_tls(ca), open_timeout=5) as c:
        c.send("secret")
        assert c.recv(5) == "secret"
        big = bytes(range(256)) * 250  # several TLS records (16 KiB at most) per message
        c.send(big)
        assert c.recv(5) == big
    assert closed_by_peer(plain)
    plain.close()
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust it
        connect(f"wss://127.0.0.1:{port}/", ssl=ssl.create_default_context(), open_timeout=5)
    wait_for(lambda: node.sockets_stats().get("tls_errors", 0) >= 2)
    lines = wait_for(lambda: len(log_lines(log_path, "TLS handshake")) >= 2
                     and log_lines(log_path, "TLS handshake"))
    assert len(lines) == 2, lines  # one line per failed handshake


def test_tls_on_the_tcp_gate(node: Node, ca: trustme.CA, cert_files) -> None:
    gate, port = start(node, Gate, max_frame=65535, **cert_files)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with client_tls(ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
        for size in (1, 1000, 65535):
            msg = bytes([size % 251]) * size
            s.sendall(pack(msg))
            assert recv_frame(s) == msg
        many = b"".join(pack(b"%04d" % i) for i in range(500))  # many frames, one write
        s.sendall(many)
        assert [recv_frame(s) for _ in range(500)] == [b"%04d" % i for i in range(500)]


def test_bad_tls_options_are_refused(node: Node, tmp_path: Path) -> None:
    from node import ServiceStartError

    with pytest.raises(ServiceStartError, match="cannot load TLS certificate"):
        node.newservice(WsGate, Echo, "127.0.0.1", 0, {"tls_cert": str(tmp_path / "none.pem")})
    with pytest.raises(ServiceStartError, match="tls_key given without tls_cert"):
        node.newservice(Gate, Echo, "127.0.0.1", 0, {"tls_key": str(tmp_path / "k.pem")})
    with pytest.raises(ServiceStartError, match="unknown WsGate options"):
        node.newservice(WsGate, Echo, "127.0.0.1", 0, {"max_frame": 10})


def test_tls_with_backpressure_loses_nothing(node: Node, ca: trustme.CA, cert_files) -> None:
    """Pausing and resuming a TLS connection: bytes OpenSSL already decrypted are not
    forgotten while select() shows nothing to read."""

    class Slow(Agent):
        def on_client(self, data: bytes | str) -> None:
            time.sleep(0.0005)
            self.send_client(data)

    gate = node.newservice(Gate, Slow, "127.0.0.1", 0, {"mailbox_limit": 8, **cert_files})
    port = node.call(gate, "address")[1]
    n = 600
    frames = [b"%05d" % i + b"x" * 995 for i in range(n)]
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    paused = []
    with client_tls(ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
        got: list[bytes] = []
        reader = threading.Thread(target=lambda: got.extend(recv_frame(s) for _ in range(n)))
        reader.start()
        s.sendall(b"".join(pack(f) for f in frames))
        while reader.is_alive() and not paused:
            paused += [1] if node.call(gate, "stat")["paused"] else []
        reader.join(30)
    assert got == frames
    assert paused  # the gate did stop reading the TLS connection meanwhile
