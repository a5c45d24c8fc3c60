"""The embedded (in-process) coordinator and package-level contracts."""

from __future__ import annotations

import threading
import time
import types
from typing import Any

import pytest

import coord
from coord._redis_url import parse_sentinel_url
from coord.embedded import EmbeddedCoordinator


class Rec(coord.BaseListener):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.cv = threading.Condition()

    def _add(self, *ev: Any) -> None:
        with self.cv:
            self.events.append(ev)
            self.cv.notify_all()

    def on_config(self, key: str, value: Any) -> None:
        self._add("config", key, value)

    def on_master(self, is_master: bool, epoch: int, master_id: int | None) -> None:
        self._add("master", is_master, epoch, master_id)

    def on_health(self, health: coord.Health) -> None:
        self._add("health", health)

    def wait(self, ev: tuple[Any, ...], timeout: float = 5) -> None:
        with self.cv:
            assert self.cv.wait_for(lambda: ev in self.events, timeout), self.events


class Waiter:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.lost = threading.Event()
        self.result: Any = None

    def acquired(self, r: Any) -> None:
        self.result = r
        self.done.set()

    def on_lost(self, _h: Any) -> None:
        self.lost.set()

    def get(self) -> Any:
        assert self.done.wait(5)
        return self.result


@pytest.fixture
def c():
    rec = Rec()
    co = coord.connect(None, None, "unit")
    assert isinstance(co, EmbeddedCoordinator)
    co.add_listener(rec)
    co.start(5, "localhost", 1, {"harbor": "inproc://x"})
    co.rec = rec  # type: ignore[attr-defined]
    yield co
    co.stop()


def test_exports_are_exactly_public_and_importable():
    for name in coord.__all__:
        assert getattr(coord, name) is not None
    public = {
        n
        for n, v in vars(coord).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public - {"annotations"} == set(coord.__all__)


def test_error_tree():
    for err in (
        coord.NameTaken,
        coord.NodeIdTaken,
        coord.LockTimeout,
        coord.LockLost,
        coord.CoordUnavailable,
        coord.NameNotFound,
    ):
        assert issubclass(err, coord.CoordError)


def test_nodeinfo_json_roundtrip():
    info = coord.NodeInfo(3, 99, "h", 42, {"harbor": "tcp://h:1"})
    assert coord.NodeInfo.from_json(info.to_json()) == info
    with pytest.raises(ValueError):
        coord.NodeInfo.from_json(b"{}")


def test_sentinel_url():
    s = parse_sentinel_url("redis+sentinel://:pw@a:26379,b:26380/mymaster/2")
    assert s.sentinels == (("a", 26379), ("b", 26380))
    assert (s.service, s.db, s.password) == ("mymaster", 2, "pw")
    assert parse_sentinel_url("redis+sentinel://a:1/m").db == 0
    for bad in ("redis+sentinel://a:1", "redis+sentinel://a/m", "redis://a:1/m"):
        with pytest.raises(ValueError):
            parse_sentinel_url(bad)


def test_start_members_master_health(c):
    assert c.health is coord.Health.CONNECTED
    assert list(c.members()) == [5] and c.node.endpoints == {"harbor": "inproc://x"}
    assert c.is_master() and c.master() == (5, 1)
    c.rec.wait(("master", True, 1, 5))
    c.rec.wait(("health", coord.Health.CONNECTED))


def test_names(c):
    c.register_name("lobby", 10)
    c.register_name("lobby", 10)
    with pytest.raises(coord.NameTaken):
        c.register_name("lobby", 11)
    assert c.query_name("lobby") == 10 and c.names() == {"lobby": 10}
    with pytest.raises(coord.NameNotFound):
        c.wait_name("later", 0.05)
    threading.Timer(0.1, c.register_name, ("later", 12)).start()
    assert c.wait_name("later", 5) == 12
    c.unregister_name("lobby", 11)
    assert c.query_name("lobby") == 10
    c.join_group("g", 10)
    c.unregister_handle(10)
    assert c.query_name("lobby") is None and c.groups() == {}


def test_groups_and_pick(c):
    for h in (3, 1, 2):
        c.join_group("g", h)
    assert c.group_members("g") == [1, 2, 3] and c.groups() == {"g": [1, 2, 3]}
    owner = c.pick("g", "key")
    assert owner in (1, 2, 3) and c.pick("g", "key") == owner
    c.leave_group("g", 1)
    assert c.group_members("g") == [2, 3]
    assert c.pick("none", 1) is None


def test_config_and_notices(c):
    c.watch_config("k")
    c.config_set("k", {"a": 1})
    c.config_set("other", 2)
    assert c.config_get("k") == {"a": 1} and c.config_get("nope", 7) == 7
    assert c.config_list() == {"k": {"a": 1}, "other": 2}
    c.rec.wait(("config", "k", {"a": 1}))
    assert not [e for e in c.rec.events if e[:2] == ("config", "other")]
    with pytest.raises(TypeError):
        c.config_set("bad", object())


def test_locks_fences_fifo_timeout_cancel(c):
    w1 = Waiter()
    r1 = c.lock("k", 1.0, None, "redis", w1.acquired, w1.on_lost)
    h1 = w1.get()
    assert h1.valid and h1.fence == 1
    w2, w3, wt = Waiter(), Waiter(), Waiter()
    c.lock("k", 1.0, 5, "zk", w2.acquired, w2.on_lost)
    c.lock("k", 1.0, 5, "zk", w3.acquired, w3.on_lost)
    c.lock("k", 1.0, 0.05, "zk", wt.acquired, wt.on_lost)
    assert isinstance(wt.get(), coord.LockTimeout)
    time.sleep(0.05)
    r1.cancel()  # releases the held lock
    assert not h1.valid
    h2 = w2.get()
    assert h2.fence == 2 and not w3.done.is_set()
    h2.release()
    h2.release()
    assert w3.get().fence == 3
    w4 = Waiter()
    r4 = c.lock("k", 1.0, None, "zk", w4.acquired, w4.on_lost)
    r4.cancel()
    w3.result.release()
    w5 = Waiter()
    c.lock("k", 1.0, None, "zk", w5.acquired, w5.on_lost)
    assert w5.get().fence == 4  # the cancelled waiter left nothing behind
    assert not w4.done.is_set()
    with pytest.raises(ValueError):
        c.lock("k", 1.0, None, "etcd", w5.acquired, w5.on_lost)
    c.stop()
    assert w5.lost.wait(5)


def test_submit(c):
    done = threading.Event()
    out: list[Any] = []
    c.submit(lambda x: x * 2, 21, callback=lambda r, e: (out.append((r, e)), done.set()))
    assert done.wait(5) and out == [(42, None)]
    c.stop()
    with pytest.raises(coord.CoordUnavailable):
        c.submit(print, callback=lambda r, e: None)
    assert c.health is coord.Health.LOST
