"""The lobby demo across two real node processes: one nickname space, shared rooms,
chat and shouts that cross nodes."""

from __future__ import annotations

import time

import pytest

from examples.lobby.client import LobbyClient
from node import Node
from tests.cluster.conftest import wait_members
from tests.conftest import free_port, wait_for

pytestmark = pytest.mark.cluster


def login(port: int, nick: str) -> LobbyClient:
    c = LobbyClient("127.0.0.1", port)
    assert c.command(f"login {nick}") == f"ok hello {nick}"
    return c


def test_lobby_across_nodes(nodes, driver: Node) -> None:
    ports = {i: (free_port("127.0.0.1"), free_port("127.0.0.1")) for i in (1, 2)}
    for i in (1, 2):
        nodes(i, [{"class": "examples.lobby.server:Lobby", "args": [*ports[i], 2]}])
    wait_members(driver, {1, 2})
    wait_for(lambda: len(driver.coord.group_members("lobby.rooms")) == 4, timeout=30)

    def up(port: int) -> bool:
        try:
            LobbyClient("127.0.0.1", port).close()
        except OSError:
            return False
        return True

    wait_for(lambda: up(ports[1][0]) and up(ports[2][0]), timeout=30)
    ann = login(ports[1][0], "ann")
    bob_try = LobbyClient("127.0.0.1", ports[2][0])
    assert bob_try.command("login ann") == "error nick ann is taken"  # cluster-wide
    assert bob_try.command("login bob") == "ok hello bob"
    bob = bob_try
    assert ann.command("join hall") == "ok joined hall: ann"
    assert bob.command("join hall") == "ok joined hall: ann bob"
    ann.wait_chat("hall * bob joined")
    assert bob.command("say hi from node 2") == "ok said to 2"
    ann.wait_chat("hall bob: hi from node 2")
    time.sleep(1.0)  # the SUB sockets of a first subscription connect asynchronously
    assert ann.command("shout everyone") == "ok shouted"
    bob.wait_chat("* ann shouts: everyone")
    ann.wait_chat("* ann shouts: everyone")
    bob.close()
    ann.wait_chat("hall * bob left")
    ann.close()
