"""Supervisor on a standalone node: strategies, restart kinds, intensity, nesting, backoff,
ordered start and shutdown, failing starts, global names, bad specs."""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import node.supervisor as supervisor_module
from node import (
    ChildSpec,
    Node,
    Service,
    ServiceExited,
    ServiceNotFound,
    ServiceStartError,
    Supervisor,
    expose,
)
from node._child_spec import Child
from tests.conftest import wait_for

# What the workers did, per test key: ("start"|"started"|"stop"|"stopped", tag). One process.
EVENTS: dict[str, list[tuple[str, str]]] = defaultdict(list)
FAILS: dict[str, int] = defaultdict(int)  # key:tag -> how many coming starts must fail


class Worker(Service):
    """Records its start and stop; fails its start while FAILS says so."""

    async def on_start(self, key: str, tag: str, start_delay: float = 0.0,
                       global_name: str | None = None) -> None:
        self.key, self.tag = key, tag
        EVENTS[key].append(("start", tag))
        if FAILS[f"{key}:{tag}"] > 0:
            FAILS[f"{key}:{tag}"] -= 1
            raise RuntimeError(f"{tag} refuses to start")
        if start_delay:
            await self.sleep(start_delay)
        if global_name:
            await self.register(global_name)
        EVENTS[key].append(("started", tag))

    async def on_stop(self) -> None:
        EVENTS[self.key].append(("stop", self.tag))
        await self.sleep(0.05)  # a slow stop: the next one must wait for it
        EVENTS[self.key].append(("stopped", self.tag))

    @expose
    def ping(self) -> str:
        return self.tag

    @expose
    def quit(self) -> None:
        self.exit()


@pytest.fixture
def key() -> str:
    return uuid.uuid4().hex[:8]


def spec(key: str, tag: str, **kw: Any) -> ChildSpec:
    args = kw.pop("args", ())
    return ChildSpec(Worker, args=(key, tag, *args), id=tag, **kw)


def kids(node: Node, sup: int) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in node.call(sup, "children")}


def handles(node: Node, sup: int) -> dict[str, int | None]:
    return {i: c["handle"] for i, c in kids(node, sup).items()}


def settled(node: Node, sup: int, ids: list[str], old: dict[str, int | None]) -> dict:
    """Wait until every child in ``ids`` runs under a handle not in ``old``."""
    def check() -> dict | None:
        now = kids(node, sup)
        ok = all(now[i]["state"] == "running" and now[i]["handle"] != old[i] for i in ids)
        return now if ok else None
    return wait_for(check, timeout=10)


def alive(node: Node, h: int) -> bool:
    return node.service(h) is not None


# -- strategies ---------------------------------------------------------------------------


def test_one_for_one_restarts_only_the_failed_child(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [spec(key, t) for t in "abc"])
    before = handles(node, sup)
    node.kill(before["b"])
    after = settled(node, sup, ["b"], before)
    assert after["a"]["handle"] == before["a"] and after["c"]["handle"] == before["c"]
    assert after["b"]["restarts"] == 1 and after["b"]["last_exit"] == "kill"
    assert node.call(after["b"]["handle"], "ping") == "b"
    assert not alive(node, before["b"])  # type: ignore[arg-type]


def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order(
        node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [spec(key, t) for t in "abc"],
                          {"strategy": "one_for_all"})
    before = handles(node, sup)
    EVENTS[key].clear()
    node.kill(before["b"])
    settled(node, sup, ["a", "b", "c"], before)
    ev = EVENTS[key]
    # b was killed (its on_stop runs too), then c and a stopped in reverse order, one at a
    # time; then a, b, c started in order.
    stops = [e for e in ev if e[0] in ("stop", "stopped") and e[1] != "b"]
    assert stops == [("stop", "c"), ("stopped", "c"), ("stop", "a"), ("stopped", "a")]
    assert [t for k, t in ev if k == "started"] == ["a", "b", "c"]
    assert not any(alive(node, h) for h in before.values())  # type: ignore[arg-type]


def test_rest_for_one_restarts_the_failed_child_and_those_after_it(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [spec(key, t) for t in "abcd"],
                          {"strategy": "rest_for_one"})
    before = handles(node, sup)
    EVENTS[key].clear()
    node.kill(before["b"])
    after = settled(node, sup, ["b", "c", "d"], before)
    assert after["a"]["handle"] == before["a"]
    assert [t for k, t in EVENTS[key] if k == "stop" and t != "b"] == ["d", "c"]
    assert [t for k, t in EVENTS[key] if k == "started"] == ["b", "c", "d"]


# -- restart kinds -------------------------------------------------------------------------


def test_permanent_transient_temporary(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [
        spec(key, "perm"), spec(key, "trans", restart="transient"),
        spec(key, "temp", restart="temporary"), spec(key, "trans2", restart="transient"),
    ], {"intensity": 10})
    before = handles(node, sup)
    # A normal end (exit()): the permanent child comes back, the transient one does not.
    node.send(before["perm"], "quit")
    node.send(before["trans"], "quit")
    settled(node, sup, ["perm"], before)
    wait_for(lambda: kids(node, sup)["trans"]["state"] == "stopped")
    # An abnormal end (kill): the transient child comes back, the temporary one does not.
    node.kill(before["trans2"])
    node.kill(before["temp"])
    settled(node, sup, ["trans2"], before)
    wait_for(lambda: kids(node, sup)["temp"]["state"] == "stopped")
    time.sleep(0.3)  # nothing else happens later
    k = kids(node, sup)
    assert k["trans"]["handle"] is None and k["trans"]["last_exit"] == "exit"
    assert k["temp"]["handle"] is None and k["temp"]["restarts"] == 0
    assert k["trans2"]["restarts"] == 1 and k["perm"]["restarts"] == 1
    assert node.call(sup, "count_children") == {
        "specs": 4, "active": 2, "restarting": 0, "stopped": 2}


# -- intensity and nesting ---------------------------------------------------------------------


def test_intensity_exceeded_stops_children_in_reverse_and_exits(node: Node, key: str,
                                                               log_path: Path) -> None:
    sup = node.newservice(Supervisor, [spec(key, t) for t in "abc"],
                          {"intensity": 1, "period": 10})
    first = handles(node, sup)
    node.kill(first["b"])
    second = settled(node, sup, ["b"], first)
    EVENTS[key].clear()
    node.kill(second["b"]["handle"])  # the 2nd restart within 10 s: over the intensity
    wait_for(lambda: not alive(node, sup))
    assert [t for k, t in EVENTS[key] if k == "stop" and t != "b"] == ["c", "a"]
    for h in (first["a"], first["c"], second["b"]["handle"]):
        assert not alive(node, h)
    with pytest.raises((ServiceNotFound, ServiceExited)):
        node.call(sup, "children")
    assert _log(log_path, "stopping all children and exiting")


def test_nested_supervisor_is_restarted_by_its_parent(node: Node, key: str) -> None:
    inner = ChildSpec(Supervisor, args=([spec(key, "w")], {"intensity": 1, "period": 10}),
                      id="inner")
    outer = node.newservice(Supervisor, [inner, spec(key, "side")])
    o1 = handles(node, outer)
    w1 = handles(node, o1["inner"])["w"]  # type: ignore[arg-type]
    node.kill(w1)  # type: ignore[arg-type]
    w2 = wait_for(lambda: (h := handles(node, o1["inner"])["w"]) != w1 and h)  # type: ignore[arg-type]
    node.kill(w2)  # inner gives up, exits; outer starts a fresh inner with a fresh worker
    o2 = settled(node, outer, ["inner"], o1)
    assert not alive(node, o1["inner"])  # type: ignore[arg-type]
    assert o2["inner"]["restarts"] == 1 and o2["inner"]["last_exit"] == "exit"
    assert o2["side"]["handle"] == o1["side"]  # one_for_one: the sibling is untouched
    w3 = wait_for(lambda: handles(node, o2["inner"]["handle"])["w"])
    assert w3 not in (w1, w2) and node.call(w3, "ping") == "w"


# -- backoff and failing starts ----------------------------------------------------------------


def test_backoff_grows_between_failed_starts_then_the_child_runs(node: Node, key: str) -> None:
    FAILS[f"{key}:a"] = 4
    sup = node.newservice(Supervisor, [spec(key, "a")], {
        "intensity": 10, "backoff_base": 0.1, "backoff_factor": 2.0, "jitter": 0.1})
    k = kids(node, sup)["a"]  # on_start of the supervisor waits for the child's first run
    assert k["state"] == "running" and k["restarts"] == 4
    assert [e for e in EVENTS[key] if e[1] == "a"] == [("start", "a")] * 5 + [("started", "a")]
    t = k["restarted_at"]
    gaps = [b - a for a, b in zip(t, t[1:], strict=False)]
    # Nominal 0.2, 0.4, 0.8 (+-10 %, plus scheduling): each clearly longer than the last.
    assert all(g2 > g1 * 1.3 for g1, g2 in zip(gaps, gaps[1:], strict=False)), gaps
    assert gaps[-1] > 2.5 * gaps[0], gaps


def test_backoff_delays_are_jittered_and_capped(node: Node) -> None:
    sup = node.newservice(Supervisor, [], {
        "backoff_base": 0.1, "backoff_factor": 2.0, "backoff_max": 1.0, "jitter": 0.5})
    svc: Any = node.service(sup)
    child = Child("x", ChildSpec(Worker))
    nominal = [min(1.0, 0.1 * 2**n) for n in range(8)]
    scale = [svc._backoff(child) / d for d in nominal]  # touches only child and the rng
    assert all(0.5 <= f <= 1.5 for f in scale), scale
    assert len({round(f, 6) for f in scale}) > 1  # jittered, not a fixed multiple
    exact = node.service(node.newservice(Supervisor, [], {"jitter": 0.0, "backoff_max": 0.3}))
    child = Child("y", ChildSpec(Worker))
    assert [round(exact._backoff(child), 6) for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]  # type: ignore[union-attr]


def test_restart_whose_on_start_fails_n_times_then_succeeds(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [spec(key, "a")], {"intensity": 10})
    before = handles(node, sup)
    FAILS[f"{key}:a"] = 3
    node.kill(before["a"])
    after = settled(node, sup, ["a"], before)
    assert after["a"]["restarts"] == 4  # 3 failed starts and the one that worked
    assert FAILS[f"{key}:a"] == 0
    assert node.call(after["a"]["handle"], "ping") == "a"


def test_start_failing_past_the_intensity_fails_the_supervisor_start(
        node: Node, key: str) -> None:
    FAILS[f"{key}:b"] = 100
    with pytest.raises(ServiceStartError, match="gave up starting child 'b'"):
        node.newservice(Supervisor, [spec(key, "a"), spec(key, "b"), spec(key, "c")],
                        {"intensity": 2, "backoff_base": 0.01})
    ev = EVENTS[key]
    assert ("stopped", "a") in ev and ("start", "c") not in ev  # a stopped again, c never ran
    assert not [s for s in node.services() if s["class"] == "Worker"]


# -- ordered start and shutdown --------------------------------------------------------------


def test_ordered_start_and_reverse_ordered_shutdown(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [
        spec(key, "a", args=(0.2,)), spec(key, "b", args=(0.05,)), spec(key, "c")])
    assert EVENTS[key] == [("start", "a"), ("started", "a"), ("start", "b"),
                           ("started", "b"), ("start", "c"), ("started", "c")]
    EVENTS[key].clear()
    node.kill(sup)
    wait_for(lambda: not alive(node, sup))
    assert EVENTS[key] == [("stop", "c"), ("stopped", "c"), ("stop", "b"),
                           ("stopped", "b"), ("stop", "a"), ("stopped", "a")]


def test_stop_child_and_restart_child(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [spec(key, "a"), spec(key, "b")])
    before = handles(node, sup)
    assert node.call(sup, "stop_child", "a") is True
    assert kids(node, sup)["a"]["state"] == "stopped" and not alive(node, before["a"])  # type: ignore[arg-type]
    time.sleep(0.2)
    assert kids(node, sup)["a"]["handle"] is None  # stopped on purpose: not restarted
    assert node.call(sup, "stop_child", "a") is False
    h = node.call(sup, "restart_child", "a")
    assert kids(node, sup)["a"] == {**kids(node, sup)["a"], "handle": h, "state": "running"}
    h2 = node.call(sup, "restart_child", "b")
    assert h2 != before["b"] and not alive(node, before["b"])  # type: ignore[arg-type]
    with pytest.raises(Exception, match="no child 'zz'"):
        node.call(sup, "stop_child", "zz")


# -- names ------------------------------------------------------------------------------------


def test_local_name_given_at_spawn_comes_back(node: Node, key: str) -> None:
    sup = node.newservice(Supervisor, [spec(key, "a", name=f".w{key}")])
    h1 = node.resolve(f".w{key}")
    node.kill(h1)
    h2 = wait_for(lambda: (h := node.local_names().get(f".w{key}")) != h1 and h)
    assert handles(node, sup)["a"] == h2


def test_global_name_waits_for_the_old_holder_to_let_go(node: Node, key: str,
                                                        log_path: Path) -> None:
    name = f"g{key}"
    sup = node.newservice(Supervisor, [spec(key, "a", args=(0.0, name), name=name)],
                          {"backoff_base": 0.3, "jitter": 0.0, "name_wait": 30})
    h1 = node.coord.query_name(name)
    assert h1 == handles(node, sup)["a"]
    node.kill(h1)
    wait_for(lambda: kids(node, sup)["a"]["state"] == "restarting")
    wait_for(lambda: node.coord.query_name(name) is None)  # dropped in the background
    node.coord.register_name(name, h1)  # the old holder's name lingers (a slow drop)
    time.sleep(1.0)
    assert kids(node, sup)["a"]["state"] == "restarting"  # waiting, not failing:
    assert EVENTS[key].count(("start", "a")) == 1  # no new start was even tried
    node.coord.unregister_name(name, h1)
    h2 = wait_for(lambda: kids(node, sup)["a"]["state"] == "running"
                  and kids(node, sup)["a"]["handle"])
    assert h2 != h1 and node.coord.query_name(name) == h2
    assert not _log(log_path, "NameTaken")


def test_global_name_wait_is_bounded(node: Node, key: str, log_path: Path) -> None:
    name = f"g{key}"
    sup = node.newservice(Supervisor, [spec(key, "a", args=(0.0, name), name=name)],
                          {"backoff_base": 0.3, "jitter": 0.0, "name_wait": 0.2,
                           "intensity": 2})
    h1 = node.coord.query_name(name)
    node.kill(h1)
    wait_for(lambda: kids(node, sup)["a"]["state"] == "restarting")
    wait_for(lambda: node.coord.query_name(name) is None)
    node.coord.register_name(name, h1)  # never let go: the supervisor tries, fails, gives up
    wait_for(lambda: not alive(node, sup), timeout=15)
    assert _log(log_path, "NameTaken")
    node.coord.unregister_name(name, h1)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("children", "options", "match"), [
    ([{"class": "nomodule"}], None, "module:Class"),
    ([{"cls": "a:B"}], None, "needs 'class'"),
    ([ChildSpec(Worker, restart="sometimes")], None, "restart must be one of"),
    ([ChildSpec(Worker, node=0)], None, "node must be"),
    ([ChildSpec(int)], None, "not a Service subclass"),  # type: ignore[arg-type]
    ([ChildSpec(Worker, id="x"), ChildSpec(Worker, id="x")], None, "two children"),
    ([], {"strategy": "all_for_none"}, "strategy must be"),
    ([], {"intensty": 3}, "unknown supervisor options"),
    ([], {"period": -1}, "period must be"),
    ([], {"jitter": 2}, "jitter in"),
    ({"class": "a:B"}, None, "must be a list"),
    ([{"class": "a:B", "args": "xyz"}], None, "args must be a list"),
    ([ChildSpec(Worker, args=["k"])], None, "args must be a tuple"),  # type: ignore[arg-type]
    ([ChildSpec(Worker, id="")], None, "id must be"),
    (["a:B"], None, "not a child spec"),
    ([], ["strategy"], "options must be a dict"),
])
def test_bad_specs_and_options_fail_the_start(node: Node, children: Any, options: Any,
                                              match: str) -> None:
    with pytest.raises(ServiceStartError, match=match):
        node.newservice(Supervisor, children, options)


def test_dict_specs_and_default_ids(node: Node, key: str) -> None:
    path = f"{Worker.__module__}:Worker"
    sup = node.newservice(Supervisor, [
        {"class": path, "args": [key, "a"]}, {"class": path, "args": [key, "b"]},
        ChildSpec.of(spec(key, "c").to_dict()),
    ])
    assert list(kids(node, sup)) == ["Worker", "Worker#1", "c"]


def test_supervisor_private_names_do_not_shadow_the_runtime(node: Node) -> None:
    # The runtime keeps its state in private attributes of ServiceCore/Service; a
    # Supervisor attribute or method of the same name would silently replace it.
    plain = node.service(node.newservice(Worker, "x", "x"))
    runtime = set(vars(plain)) | {
        n for k in type(plain).__mro__ for n in vars(k) if n.startswith("_")}
    source = Path(supervisor_module.__file__).read_text()
    own = set(re.findall(r"self\.(_[a-z]\w*)\s*(?::[^=]*)?=[^=]", source))
    own |= {n for n in vars(Supervisor) if n.startswith("_") and not n.startswith("__")}
    own.discard("_handler_table")  # set on every subclass by Service.__init_subclass__
    assert "_opts" in own and "_end_child" in own  # the scan sees what it should
    assert not ((own - {"_services"}) & runtime), own & runtime


def _log(log_path: Path, text: str) -> bool:
    """Whether ``text`` reaches the node's log within a few seconds."""
    try:
        wait_for(lambda: log_path.exists() and text in log_path.read_text(), timeout=5)
    except AssertionError:
        return False
    return True


def test_supervisor_from_node_config(key: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # The JSON-able form: what SKYMESH_SERVICES or a TOML [[services]] table holds.
    for var in [v for v in os.environ if v.startswith("SKYMESH_")]:
        monkeypatch.delenv(var)
    path = f"{Worker.__module__}:Worker"
    node = Node.from_config({"log_file": str(tmp_path / "n.log"), "services": [{
        "class": "node:Supervisor", "name": ".sup",
        "args": [[{"class": path, "args": [key, "a"], "id": "a"},
                  {"class": path, "args": [key, "b"], "id": "b", "restart": "transient"}],
                 {"strategy": "rest_for_one", "intensity": 5}],
    }]})
    try:
        before = handles(node, node.resolve(".sup"))
        node.kill(before["a"])
        after = settled(node, node.resolve(".sup"), ["a", "b"], before)
        assert after["b"]["restarts"] == 1
    finally:
        node.stop()
