"""The lobby and bank examples on a standalone node."""

from __future__ import annotations

import contextlib
import socket
import threading

import pytest

from examples.bank.bank import LEDGER_GROUP, Bank, Teller
from examples.bank.run import run
from examples.lobby.client import LobbyClient
from examples.lobby.server import Lobby
from node import CallError, Node, group
from tests.conftest import wait_for


@pytest.fixture
def lobby(node: Node) -> dict[str, int]:
    h = node.newservice(Lobby, 0, 0, 3)
    return node.call(h, "ports")


def test_lobby_login_rooms_and_chat(node: Node, lobby) -> None:
    ann = LobbyClient("127.0.0.1", lobby["binary"])
    bob = LobbyClient("127.0.0.1", lobby["binary"])
    assert ann.command("join hall").startswith("error login first")
    assert ann.command("login ann") == "ok hello ann"
    assert bob.command("login ann") == "error nick ann is taken"
    assert bob.command("login bob") == "ok hello bob"
    assert ann.command("join hall") == "ok joined hall: ann"
    assert bob.command("join hall") == "ok joined hall: ann bob"
    ann.wait_chat("hall * bob joined")
    assert bob.command("say hi all") == "ok said to 2"
    ann.wait_chat("hall bob: hi all")
    bob.wait_chat("hall bob: hi all")
    assert ann.command("who") == "ok ann bob"
    assert ann.command("shout to the lobby") == "ok shouted"  # a channel: every player
    bob.wait_chat("* ann shouts: to the lobby")

    # The text port: what a person types into nc.
    with socket.create_connection(("127.0.0.1", lobby["text"]), timeout=5) as nc:
        f = nc.makefile("rb")
        assert f.readline() == b"ok welcome: login <nick>\n"
        nc.sendall(b"login cid\njoin hall\nsay hello from nc\n")
        assert f.readline() == b"ok hello cid\n"
        assert f.readline() == b"ok joined hall: ann bob cid\n"
        assert f.readline() == b"hall cid: hello from nc\n"
        assert f.readline() == b"ok said to 3\n"
        f.close()  # else the file keeps the socket open after the with block
    ann.wait_chat("hall cid: hello from nc")
    ann.wait_chat("hall * cid left")  # nc hung up: its agent left the room

    bob.close()
    ann.wait_chat("hall * bob left")
    # bob's nick died with his agent: it is free again
    again = wait_for(lambda: _try_login(lobby["binary"], "bob"))
    assert again.command("join hall") == "ok joined hall: ann bob"
    # a player whose agent is killed (no goodbye) leaves the room through the monitor
    agent = next(s.handle for s in node.iter_services()
                 if type(s).__name__ == "Player" and s.nick == "bob")
    ann.chat.clear()
    node.kill(agent)
    ann.wait_chat("hall * bob left")
    assert ann.command("who") == "ok ann"
    again.close()
    ann.close()


def _try_login(port: int, nick: str) -> LobbyClient | None:
    c = LobbyClient("127.0.0.1", port)
    if c.command(f"login {nick}") == f"ok hello {nick}":
        return c
    c.close()
    return None


def test_lobby_nick_is_unique_under_concurrent_logins(node: Node, lobby) -> None:
    clients = [LobbyClient("127.0.0.1", lobby["binary"]) for _ in range(12)]
    answers: list[str] = []

    def login(c: LobbyClient) -> None:
        answers.append(c.command("login zed"))

    threads = [threading.Thread(target=login, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count("ok hello zed") == 1
    assert answers.count("error nick zed is taken") == 11
    for c in clients:
        c.close()


def test_lobby_garbage_costs_only_that_client(node: Node, lobby, log_path) -> None:
    good = LobbyClient("127.0.0.1", lobby["binary"])
    with socket.create_connection(("127.0.0.1", lobby["binary"]), timeout=5) as bad:
        bad.sendall(b"\x00\x02\xff\xfe")  # a frame that is not UTF-8
        bad.settimeout(5)
        with contextlib.suppress(ConnectionResetError):
            while bad.recv(1024):
                pass
    assert good.command("login ok") == "ok hello ok"
    good.close()
    wait_for(lambda: "UnicodeDecodeError" in log_path.read_text())


def test_bank_total_never_changes_under_concurrent_transfers(node: Node) -> None:
    summary = run(node, accounts=12, transfers=600, threads=6)
    assert summary["ok"], summary
    assert summary["done"] > 300 and summary["audits"] > 10


def test_bank_refuses_overdraft_and_stale_fences(node: Node) -> None:
    bank = node.newservice(Bank, {"a": 10, "b": 0}, 2, 1)
    assert tuple(node.call(bank, "transfer", "a", "b", 7)) == (3, 7)
    with pytest.raises(CallError) as info:
        node.call(bank, "transfer", "a", "b", 50)
    assert info.value.remote_type == "InsufficientFunds"
    shard = group(LEDGER_GROUP, key="a")
    node.call(shard, "set_balance", "a", 3, 10**9)  # a newer holder wrote with a big fence
    with pytest.raises(CallError) as info:
        node.call(shard, "set_balance", "a", 1000, 1)  # a stale holder: refused
    assert info.value.remote_type == "StaleFence"
    assert node.call(bank, "audit") == 10


class UnlockedTeller(Teller):
    """Takes no locks: what the locks are there to prevent."""

    async def _lock_all(self, stack, accounts):
        return dict.fromkeys(accounts, 2**62)


def test_bank_audit_catches_transfers_without_locks(node: Node, monkeypatch) -> None:
    import examples.bank.bank as bank_mod

    monkeypatch.setattr(bank_mod, "Teller", UnlockedTeller)
    summary = run(node, accounts=4, transfers=400, threads=8)
    assert not summary["ok"]  # lost updates: the invariant check sees the total move


def test_fetcher_offloads_a_real_blocking_http_client(node: Node) -> None:
    """A local HTTP server that answers slowly: fetches wait on the offload pool while
    the node keeps answering other calls."""
    import http.server
    import time

    from examples.fetcher import Fetcher

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            time.sleep(0.4)
            body = b"hello from a slow server"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        f = node.newservice(Fetcher)
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(node.call(f, "fetch", url)))
                   for _ in range(4)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        answered = 0
        while time.monotonic() - t0 < 0.3:  # two workers, four blocked fetches: still serving
            assert node.call(f, "count") == 0
            answered += 1
        assert answered > 10
        for t in threads:
            t.join(10)
        assert [r["status"] for r in results] == [200] * 4
        assert results[0]["body"] == "hello from a slow server"
        assert node.call(f, "count") == 4
    finally:
        server.shutdown()
        server.server_close()
