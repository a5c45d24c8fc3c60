"""``.console`` and the CLI commands that use it (console -c, call, status)."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from node import Node, Service, expose, format_handle
from node.builtins import parse_dest, start_console
from node.cli import main
from node.cli.ops import ConsoleClient
from tests.conftest import wait_for


class Kv(Service):
    async def on_start(self) -> None:
        self.data: dict = {}
        await self.register("kv")
        await self.join_group("stores")

    @expose
    def put(self, key, value):
        self.data[key] = value
        return len(self.data)

    @expose
    def get(self, key):
        return self.data.get(key)

    @expose
    async def hold(self, key, seconds):
        async with self.lock(key, ttl=5) as held:
            await self.sleep(seconds)
            return held.fence

    @expose
    def spin(self):
        while True:
            pass


@pytest.fixture
def console(node: Node) -> tuple[int, int]:
    handle = start_console(node, 0, "s3cret")
    return handle, node.call(handle, "address")[1]


def test_commands(node: Node, console) -> None:
    _, port = console
    kv = node.newservice(Kv)
    with ConsoleClient("127.0.0.1", port, "s3cret") as c:
        ok, lines = c.command("list")
        assert ok and any(format_handle(kv) in x and "Kv" in x for x in lines)
        ok, lines = c.command("stat")
        assert ok and any(x.startswith("services:") for x in lines)
        assert any(x.startswith("messages_per_second:") for x in lines)
        ok, lines = c.command("mem")
        assert ok and any("gc counts" in x for x in lines)
        ok, lines = c.command(f"info {format_handle(kv)}")
        assert ok and "class: Kv" in lines and "names: -" in lines
        ok, lines = c.command("ping kv")
        assert ok and "alive" in lines[0]
        ok, lines = c.command("gc")
        assert ok and lines[0].startswith("collected")
        ok, lines = c.command("names")
        assert ok and f"kv {format_handle(kv)}" in lines and any(".logger" in x for x in lines)
        ok, lines = c.command("groups")
        assert ok and lines == [f"stores: {format_handle(kv)}"]
        ok, lines = c.command("nodes")
        assert ok and lines[0] == f"master {node.node_id} epoch 1"
        ok, lines = c.command('call kv put "a b" \'{"x": [1, 2]}\'')
        assert ok and lines == ["1"]
        assert node.call(kv, "get", "a b") == {"x": [1, 2]}
        ok, lines = c.command("call kv nope")
        assert not ok and "no handler" in lines[-1]
        ok, lines = c.command("frobnicate")
        assert not ok and "unknown command" in lines[-1]
        ok, lines = c.command(f"kill {kv:#x}")
        assert ok and lines == [f"killed {format_handle(kv)}"]
    wait_for(lambda: kv not in {s["handle"] for s in node.services()})


def test_locks_and_interrupt(node: Node, console) -> None:
    _, port = console
    kv = node.newservice(Kv)
    t = threading.Thread(target=lambda: node.call(kv, "hold", "acct:7", 0.5))
    t.start()
    with ConsoleClient("127.0.0.1", port, "s3cret") as c:
        lines = wait_for(lambda: c.command("locks")[1])
        assert "acct:7" in lines[0] and format_handle(kv) in lines[0]
        t.join()
        spinner = threading.Thread(target=lambda: pytest.raises(Exception, node.call, kv, "spin"))
        spinner.start()
        time.sleep(0.1)
        ok, lines = c.command(f"interrupt {format_handle(kv)}")
        assert ok and lines[0].startswith("interrupted")
        spinner.join(5)
        assert c.command("locks") == (True, [])


def test_token_required(node: Node, console) -> None:
    _, port = console
    with ConsoleClient("127.0.0.1", port) as c:
        ok, lines = c.command("list")
        assert not ok and "hello <nonce> required" in lines[-1]
    with pytest.raises(PermissionError):
        ConsoleClient("127.0.0.1", port, "wrong")


def _token_file(tmp_path) -> str:
    path = tmp_path / "console.token"
    path.write_text("s3cret\n")
    path.chmod(0o600)
    return str(path)


def test_cli_console_call_and_status(node: Node, console, capsys, tmp_path) -> None:
    _, port = console
    kv = node.newservice(Kv)
    base = ["--port", str(port), "--token-file", _token_file(tmp_path)]
    assert main(["console", *base, "-c", "list"]) == 0
    assert "Kv" in capsys.readouterr().out
    assert main(["call", *base, "kv", "put", "k", '{"n": 1}']) == 0
    assert json.loads(capsys.readouterr().out) == 1
    assert node.call(kv, "get", "k") == {"n": 1}
    assert main(["call", *base, format_handle(kv), "missing"]) == 1
    assert "no handler" in capsys.readouterr().err
    assert main(["status", *base, "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["master"] == node.node_id and view["names"]["kv"] == format_handle(kv)
    me = view["nodes"][str(node.node_id)]
    assert any(s["class"] == "Kv" and "mailbox" in s for s in me["services"])
    assert "messages_per_second" in me
    assert main(["status", *base]) == 0
    out = capsys.readouterr().out
    assert "master 1 epoch 1" in out and "name  kv ->" in out
    assert main(["console", "--port", "1", "-c", "list"]) == 1  # nothing listens there


def test_interactive_console_and_health(node: Node, console, capsys, monkeypatch) -> None:
    _, port = console
    lines = iter(["auth s3cret", "ping .console", "", "bogus", "quit", "list"])

    def fake_input(prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr("builtins.input", fake_input)
    for key in [k for k in os.environ if k.startswith("SKYMESH_")]:
        monkeypatch.delenv(key)  # health reads its config from the environment
    assert main(["console", "--port", str(port)]) == 0
    out = capsys.readouterr().out
    assert "alive" in out and "error: ValueError: unknown command 'bogus'" in out and "bye" in out
    assert main(["health"]) == 0  # unchanged: a standalone config has nothing to check
    assert "standalone" in capsys.readouterr().out


def test_parse_dest() -> None:
    assert parse_dest(":0000000300000012") == (3 << 32) | 0x12
    assert parse_dest("0x10") == 16 and parse_dest("42") == 42 and parse_dest("lobby") == "lobby"


def test_cli_call_timeout_bounds_the_node_side_call(node: Node, console, capsys, tmp_path) -> None:
    """`skymesh call --timeout T` ends within T even when the node's call_timeout
    (10 s here) is longer: the console's own call gets the CLI's deadline."""
    _, port = console
    kv = node.newservice(Kv)
    base = ["--port", str(port), "--token-file", _token_file(tmp_path), "--timeout", "3"]
    t0 = time.monotonic()
    assert main(["call", *base, format_handle(kv), "hold", "clock", "30"]) == 1
    assert time.monotonic() - t0 < 4.0
    assert "CallTimeout" in capsys.readouterr().err



def test_a_fake_console_never_gets_the_token() -> None:
    """A console endpoint that cannot prove it holds the token (a rewritten membership
    entry pointing at an attacker) learns nothing: the CLI sends a nonce, not the token."""
    import socket as sk

    heard: list[bytes] = []
    srv = sk.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def fake() -> None:
        conn, _ = srv.accept()
        with conn:
            f = conn.makefile("rb")
            for _ in range(2):
                line = f.readline()
                if not line:
                    return
                heard.append(line)
                conn.sendall(b"proof abcd " + b"0" * 64 + b"\n<CMD OK>\n")

    t = threading.Thread(target=fake, daemon=True)
    t.start()
    with pytest.raises(PermissionError, match="did not prove"):
        ConsoleClient("127.0.0.1", srv.getsockname()[1], "s3cret")
    t.join(5)
    srv.close()
    assert heard and all(b"s3cret" not in line for line in heard)


def test_console_off_loopback_needs_a_token_and_the_handshake(node: Node) -> None:
    from node import ServiceStartError

    with pytest.raises(ServiceStartError, match="without a token"):
        start_console(node, 0, None, host="0.0.0.0")
    h = start_console(node, 0, "s3cret", host="0.0.0.0")
    port = node.call(h, "address")[1]
    with ConsoleClient("127.0.0.1", port) as c:  # plain "auth <token>" is refused there
        ok, lines = c.command("auth s3cret")
        assert not ok and "hello" in lines[-1]
    with ConsoleClient("127.0.0.1", port, "s3cret") as c:
        assert c.command("ping .console")[0]


def test_idle_unauthenticated_sessions_cannot_lock_the_operator_out(
    node: Node, monkeypatch
) -> None:
    import socket as sk

    import node.builtins.console as console_mod

    monkeypatch.setattr(console_mod, "AUTH_DEADLINE", 0.5)
    h = start_console(node, 0, "s3cret")
    port = node.call(h, "address")[1]
    idle = [sk.create_connection(("127.0.0.1", port)) for _ in range(8)]
    extra = sk.create_connection(("127.0.0.1", port))  # the 9th from one address: refused
    extra.settimeout(5)
    assert extra.recv(100) == b""
    extra.close()
    for s in idle:  # each is closed by the console once its deadline passes
        s.settimeout(5)
        assert s.recv(100) == b""
        s.close()
    with ConsoleClient("127.0.0.1", port, "s3cret") as c:
        assert c.command("ping .console")[0]
