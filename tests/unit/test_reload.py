"""Live code reload (``Node.reload``, the console's ``reload``): modules written into
``tmp_path`` and put on ``sys.path``, rewritten on disk while the node runs."""

from __future__ import annotations

import itertools
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from node import CallError, Node, ReloadError, Service, expose
from node.builtins import start_console
from node.cli.ops import ConsoleClient
from tests.conftest import wait_for

_names = itertools.count()

V1 = '''
from node import Service, expose

TAG = "v1"


def tag():
    return TAG


class Counter(Service):
    def on_start(self):
        self.n = 0
        self.hooks = []

    @expose
    def hit(self, seq):
        self.n += 1
        return (tag(), seq, self.n)

    @expose
    async def slow(self, seconds):
        await self.sleep(seconds)
        return ("slow", tag())

    @expose
    def old_only(self):
        return "old"

    @expose
    def hooks_seen(self):
        return self.hooks


class Other(Service):
    @expose
    def who(self):
        return TAG
'''

V2 = '''
import threading

from node import Service, expose

TAG = "v2"


def tag():
    return TAG


class Counter(Service):
    def on_start(self):
        self.n = 0
        self.hooks = []

    def on_reload(self, old_class):
        self.hooks.append((old_class.__qualname__, old_class is not type(self),
                           old_class.__module__, threading.current_thread().name, self.n))

    @expose
    def hit(self, seq):
        self.n += 1
        return (tag(), seq, self.n)

    @expose
    async def slow(self, seconds):
        await self.sleep(seconds)
        return ("slow", tag())

    @expose
    def new_only(self):
        return "new"

    @expose
    def hooks_seen(self):
        return self.hooks
'''


class Streamer(Service):
    """Streams sequence-numbered calls to a target, many in flight at once."""

    @expose
    async def stream(self, target: int, total: int, batch: int, until: str = "",
                     limit: int = 2_000_000) -> list[Any]:
        """At least ``total`` calls, in batches; with ``until``, on until an answer
        carries that tag (at most ``limit`` calls): no assumption on how fast a reload
        lands compared with the stream."""
        out: list[Any] = []
        start = 0
        while start < total or (until and start < limit and (
                not isinstance(out[-1], list | tuple) or out[-1][0] != until)):
            calls = [(target, "hit", i) for i in range(start, start + batch)]
            out += await self.gather(*calls, timeout=30)
            start += batch
        return [r if isinstance(r, list | tuple) else repr(r) for r in out]


@pytest.fixture
def module(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """``write(source)`` writes the test's own module and returns its name; the first
    call imports it. sys.path and sys.modules are restored after."""
    name = f"reload_mod_{next(_names)}"
    path = tmp_path / f"{name}.py"
    sys.path.insert(0, str(tmp_path))

    def write(source: str) -> str:
        path.write_text(textwrap.dedent(source))
        if name not in sys.modules:
            __import__(name)
        return name

    try:
        yield write
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def _cls(name: str, qual: str = "Counter") -> type[Service]:
    cls: type[Service] = getattr(sys.modules[name], qual)
    return cls


def test_handler_changes_under_load_without_losing_a_message(node: Node, module) -> None:
    name = module(V1)
    counter = node.newservice(_cls(name))
    streamer = node.newservice(Streamer)
    total = 20000
    results: list[Any] = []
    # The stream goes on until answers come from the new code, however fast either is.
    t = threading.Thread(
        target=lambda: results.append(node.call(streamer, "stream", counter, total, 200, "v2",
                                                timeout=120)))
    t.start()
    wait_for(lambda: node.service(counter)._n_msgs > 2000, timeout=30)  # type: ignore[union-attr]
    module(V2)
    report = node.reload(name)
    t.join(120)
    assert report.swapped and not report.kept
    (answers,) = results
    n = len(answers)
    assert n >= total
    assert [a[1] for a in answers] == list(range(n))  # every call answered, once, in order
    assert [a[2] for a in answers] == list(range(1, n + 1))  # the counter survived
    tags = [a[0] for a in answers]
    switch = tags.index("v2")
    assert 2000 < switch < n  # the reload landed mid-stream ...
    assert tags == ["v1"] * switch + ["v2"] * (n - switch)  # ... at one point
    assert node.call(counter, "hit", -1) == ("v2", -1, n + 1)


def test_a_suspended_old_handler_finishes_in_old_code(node: Node, module) -> None:
    name = module(V1)
    counter = node.newservice(_cls(name))
    slow: list[Any] = []
    t = threading.Thread(target=lambda: slow.append(node.call(counter, "slow", 0.6)))
    t.start()
    wait_for(lambda: node.services() and any(  # the coroutine is suspended in sleep
        s["handle"] == counter and s["pending_calls"] for s in node.services()))
    module(V2)
    node.reload(name)
    assert node.call(counter, "hit", 0)[0] == "v2"
    t.join(5)
    assert slow == [("slow", "v1")]  # the old coroutine kept the old code and globals
    assert node.call(counter, "slow", 0.01) == ("slow", "v2")


def test_handlers_added_and_removed_take_effect(node: Node, module) -> None:
    name = module(V1)
    counter = node.newservice(_cls(name))
    assert node.call(counter, "old_only") == "old"
    with pytest.raises(CallError) as exc:
        node.call(counter, "new_only")
    assert exc.value.remote_type == "NoHandler"
    module(V2)
    node.reload(name)
    assert node.call(counter, "new_only") == "new"
    with pytest.raises(CallError) as exc:
        node.call(counter, "old_only")
    assert exc.value.remote_type == "NoHandler"


def test_on_reload_runs_on_the_services_worker_with_the_old_class(node: Node, module) -> None:
    name = module(V1)
    counter = node.newservice(_cls(name))
    old = type(node.service(counter))
    for i in range(3):
        node.call(counter, "hit", i)
    module(V2)
    node.reload(name)
    (hook,) = node.call(counter, "hooks_seen")
    qual, distinct, mod, thread, n = hook
    assert (qual, distinct, mod, n) == ("Counter", True, name, 3)
    assert "worker" in thread  # on the service's worker, not the reloading thread
    assert type(node.service(counter)) is _cls(name) and _cls(name) is not old
    # A second reload of the same module swaps again; the old class is the first new one.
    node.reload(name)
    assert len(node.call(counter, "hooks_seen")) == 2


def test_a_broken_module_leaves_the_old_code_running(node: Node, module, log_path: Path) -> None:
    name = module(V1)
    counter = node.newservice(_cls(name))
    old_module = sys.modules[name]
    module(V2.replace("def new_only(self):", "def new_only(self:"))
    with pytest.raises(ReloadError) as exc:
        node.reload(name)
    text = str(exc.value)
    assert "\n" not in text and "SyntaxError" in text and "old code keeps running" in text
    assert node.call(counter, "hit", 1)[0] == "v1"
    assert sys.modules[name] is old_module
    # Raising half way (after the class and TAG were redefined) changes nothing either.
    module(V2 + "\nraise RuntimeError('config missing')\n")
    with pytest.raises(ReloadError, match="RuntimeError: config missing"):
        node.reload(name)
    assert node.call(counter, "hit", 2)[0] == "v1"
    assert sys.modules[name] is old_module and old_module.TAG == "v1"
    wait_for(lambda: "reload " + name + " failed" in log_path.read_text(), timeout=5)


def test_a_class_gone_from_the_module_keeps_its_old_class(node: Node, module) -> None:
    name = module(V1)
    other = node.newservice(_cls(name, "Other"))
    counter = node.newservice(_cls(name))
    module(V2)  # V2 has no Other
    report = node.reload(name)
    assert [q for _, q in report.swapped] == ["Counter"]
    assert [(q, why) for _, q, why in report.kept] == [("Other", "no longer in the module")]
    assert node.call(other, "who") == "v1"  # still the old class, reading its old globals
    assert node.call(counter, "hit", 0)[0] == "v2"
    assert "kept" in "\n".join(report.lines())


def test_refusals(node: Node, module) -> None:
    with pytest.raises(ReloadError, match="part of skymesh"):
        node.reload("node.service")
    assert not node.reload("reload_never_imported_here").loaded
    name = module(V1)
    counter = node.newservice(_cls(name))
    # The swap is not a handler: no message can name it.
    for method in ("_swap_class", "on_reload", "_run_on_reload"):
        with pytest.raises(CallError) as exc:
            node.call(counter, method, _cls(name))
        assert exc.value.remote_type == "NoHandler"


def test_console_reload_needs_the_token_and_reports(node: Node, module) -> None:
    name = module(V1)
    counter = node.newservice(_cls(name))
    port = node.call(start_console(node, 0, "s3cret"), "address")[1]
    with ConsoleClient("127.0.0.1", port) as c:  # no token: refused, nothing reloaded
        module(V2)
        ok, lines = c.command(f"reload {name}")
        assert not ok and "required" in lines[-1]
    assert node.call(counter, "hit", 0)[0] == "v1"
    with ConsoleClient("127.0.0.1", port, "s3cret") as c:
        ok, lines = c.command(f"reload {name}")
        assert ok and "1 service(s) swapped" in lines[0]
        assert node.call(counter, "hit", 1)[0] == "v2"
        module("def broken(:\n")
        ok, lines = c.command(f"reload {name}")
        assert not ok and len(lines) == 1
        assert lines[0].startswith("ReloadError: reload") and "SyntaxError" in lines[0]
        ok, lines = c.command("reload not-a-module!")
        assert not ok and "usage" in lines[0]
    assert node.call(counter, "hit", 2)[0] == "v2"


def test_reload_is_not_called_from_a_worker(node: Node) -> None:
    class Bad(Service):
        @expose
        def go(self) -> str:
            try:
                Node.of(self).reload("json")
            except RuntimeError as exc:
                return str(exc)
            return "ran"

    assert "plain thread" in node.call(node.newservice(Bad), "go")


def test_reload_waits_boundedly_for_a_busy_service(node: Node, module) -> None:
    name = module(V1.replace("return (tag(), seq, self.n)",
                             "import time; time.sleep(seq); return (tag(), seq, self.n)"))
    counter = node.newservice(_cls(name))
    node.send(counter, "hit", 1.0)  # busy for a second
    time.sleep(0.1)
    module(V2)
    report = node.reload(name, timeout=0.2)
    assert not report.swapped and "still queued" in report.kept[0][2]
    assert node.call(counter, "hit", 0)[0] == "v2"  # the queued swap ran before this call


def test_async_on_reload_and_a_service_still_starting(node: Node, module) -> None:
    name = module(V1.replace("    def on_start(self):\n        self.n = 0",
                             "    async def on_start(self, pause=0):\n"
                             "        self.n = 0\n        await self.sleep(pause)"))
    ready = node.newservice(_cls(name))
    started: list[int] = []
    t = threading.Thread(target=lambda: started.append(node.newservice(_cls(name), 0.8)))
    t.start()
    wait_for(lambda: len(node.services()) >= 4)  # logger, launcher, ready, the starting one
    module(V2.replace("    def on_reload(self, old_class):\n",
                      "    async def on_reload(self, old_class):\n"
                      "        await self.sleep(0.01)\n"))
    report = node.reload(name)
    outcomes = sorted(q for _, q in report.swapped)
    assert outcomes == ["Counter", "Counter (swapped (starting: no on_reload))"]
    t.join(5)
    (starting,) = started
    assert node.call(starting, "hit", 0)[0] == "v2"
    assert node.call(starting, "hooks_seen") == []  # no hook before on_start finished
    wait_for(lambda: len(node.call(ready, "hooks_seen")) == 1)  # the async hook ran


def test_cli_reload_through_one_console(node: Node, module, capsys, tmp_path: Path) -> None:
    from node.cli import main

    name = module(V1)
    counter = node.newservice(_cls(name))
    port = str(node.call(start_console(node, 0, "s3cret"), "address")[1])
    good, bad = tmp_path / "token", tmp_path / "wrong"
    good.write_text("s3cret\n")
    bad.write_text("wrong\n")
    cli = ["reload", "--port", port, "--token-file"]
    module(V2)
    assert main([*cli, str(good), name]) == 0
    assert "1 service(s) swapped" in capsys.readouterr().out
    assert node.call(counter, "hit", 0)[0] == "v2"
    assert main([*cli, str(bad), name]) == 1
    assert "not reloaded: console refused" in capsys.readouterr().err
    assert main([*cli, str(good), "no_such_module_here"]) == 1
    assert "loaded on none" in capsys.readouterr().err
    assert main([*cli, str(good), "__main__"]) == 1
    assert "__main__ cannot be reloaded" in capsys.readouterr().err
    assert main(["reload", "--port", port, "--node", "1", name]) == 2  # --node needs a cluster
