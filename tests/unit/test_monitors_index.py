"""The index of remote monitors (node/_monitors.py).

The harbor asks ``watches(nid)`` for every idle peer on every tick (a PUSH
socket to a node someone monitors stays open, so its death is seen): it must
be one probe, and a watch that ended must leave nothing behind. The
collaborators are tiny stand-ins recording what Monitors asks of them; the
cross-node behaviour itself (a remote ``nodedown``) is proven by
tests/cluster/test_cluster.py over real node processes.
"""

from __future__ import annotations

from typing import Any

from node._monitors import Monitors
from node.address import make_handle
from node.errors import NodeDown

HERE = 1


class _Router:
    node_id = HERE

    def __init__(self) -> None:
        self.services: dict[int, Any] = {}
        self.posted: list[tuple[int, Any]] = []

    def post(self, dest: int, msg: Any) -> None:
        self.posted.append((dest, msg))


class _Harbor:
    def __init__(self) -> None:
        self.controls: list[tuple[int, int, str]] = []
        self.down_nodes: set[int] = set()

    def on_peer_down(self, fn: Any) -> None:
        self.peer_down = fn

    def on_watching(self, fn: Any) -> None:
        self.watching = fn

    def control(self, watcher: int, target: int, event: str) -> None:
        from node.address import node_of

        if node_of(target) in self.down_nodes:
            raise NodeDown(node_of(target))
        self.controls.append((watcher, target, event))


def _monitors() -> tuple[Monitors, _Router, _Harbor]:
    router, harbor = _Router(), _Harbor()
    return Monitors(router, harbor), router, harbor  # type: ignore[arg-type]


def _empty(m: Monitors) -> bool:
    return not m._remote and not m._watching  # noqa: SLF001 - the invariant under test


# Two local watchers and a target on each of nodes 2 and 3.
A, B = make_handle(HERE, 1), make_handle(HERE, 2)
T2, T3 = make_handle(2, 7), make_handle(3, 9)


def _watched(*pairs: tuple[int, int]) -> tuple[Monitors, _Router, _Harbor]:
    """Monitors in which each (watcher, target) of ``pairs`` was monitored."""
    m, router, harbor = _monitors()
    for watcher, target in pairs:
        m.monitor(watcher, target)
    return m, router, harbor


def test_watches_follows_monitor_and_demonitor() -> None:
    a, b, t2, t3 = A, B, T2, T3
    m, _, harbor = _watched((a, t2), (b, t2), (a, t3))
    assert harbor.watching == m.watches  # what the harbor asks per idle peer
    assert m.watches(2) and m.watches(3) and not m.watches(4)
    m.demonitor(a, t2)
    assert m.watches(2)  # b still watches t2
    m.demonitor(b, t2)
    assert not m.watches(2) and m.watches(3)
    m.demonitor(a, t3)
    assert not m.watches(3)
    assert _empty(m)
    assert [e for _, _, e in harbor.controls] == ["monitor"] * 3 + ["demonitor"] * 3


def test_a_retired_watcher_leaves_nothing_behind() -> None:
    m, _, _ = _monitors()
    a = make_handle(HERE, 1)
    m.monitor(a, make_handle(2, 7))
    m.monitor(a, make_handle(2, 8))
    m.retired(a, "exit")
    assert not m.watches(2)
    assert _empty(m)


def test_node_down_tells_every_watcher_once_and_clears() -> None:
    a, b, t2, t3 = A, B, T2, T3
    m, router, harbor = _watched((a, t2), (b, t2), (b, t3))
    harbor.peer_down(2)
    downs = sorted((dest, msg[3][1]) for dest, msg in router.posted)
    assert downs == [(a, (t2, "nodedown")), (b, (t2, "nodedown"))]
    assert not m.watches(2) and m.watches(3)
    harbor.peer_down(2)  # reported twice: nobody is told again
    assert len(router.posted) == 2
    m.demonitor(b, t3)
    assert _empty(m)


def test_monitor_of_a_down_node_is_refused_at_once() -> None:
    m, router, harbor = _monitors()
    a = make_handle(HERE, 1)
    harbor.down_nodes.add(2)
    t = make_handle(2, 7)
    m.monitor(a, t)
    assert [(dest, msg[3]) for dest, msg in router.posted] == [(a, ("down", (t, "nodedown")))]
    assert not m.watches(2)
    assert _empty(m)
