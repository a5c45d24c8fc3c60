"""Tracing inside one node: a span per handler run, parented on the caller's span through
the ``(method, args, traceparent)`` payload; bad contexts are ignored and counted; a node
with tracing off serves traced payloads unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from node import Node, Service, expose
from node.message import SEND
from tests.conftest import wait_for
from tests.unit.test_reload import module  # noqa: F401 - the fixture


class Back(Service):
    def on_start(self) -> None:
        self.notes: list[Any] = []

    @expose
    def work(self, x: int) -> int:
        return x * 2

    @expose
    def note(self, x: Any) -> None:
        self.notes.append(x)

    @expose
    def notes_seen(self) -> list[Any]:
        return self.notes

    @expose
    def fail(self) -> None:
        raise KeyError("nope")


class Front(Service):
    @expose
    async def go(self, back: int) -> int:
        a = await self.call(back, "work", 1)
        await self.sleep(0.01)  # resumed by a TIMER: the span must be current again
        b = await self.call(back, "work", 2)
        self.send(back, "note", a + b)
        return a + b

    @expose
    def raw(self, back: int, payload: Any) -> None:
        self._router.deliver(self.handle, back, 0, SEND, payload)


@pytest.fixture
def traced(tmp_path: Any) -> Iterator[tuple[Node, TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with Node.standalone(tracing=True, tracer_provider=provider,
                         log_file=str(tmp_path / "log")) as n:
        yield n, provider, exporter


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def test_one_trace_across_services(traced: Any) -> None:
    node, provider, exporter = traced
    back = node.newservice(Back)
    front = node.newservice(Front)
    with provider.get_tracer("test").start_as_current_span("request") as root:
        assert node.call(front, "go", back) == 6
    wait_for(lambda: node.call(back, "notes_seen") == [6])
    spans = exporter.get_finished_spans()
    trace_id = root.get_span_context().trace_id
    go, = by_name(spans, "Front.go")
    works = by_name(spans, "Back.work")
    note, = by_name(spans, "Back.note")
    assert len(works) == 2
    for span in (go, *works, note):
        assert span.context.trace_id == trace_id
    assert go.parent is not None and go.parent.span_id == root.get_span_context().span_id
    for child in (*works, note):  # the second call and the send come after resumptions
        assert child.parent is not None and child.parent.span_id == go.context.span_id
    assert go.end_time >= max(w.end_time for w in works)  # the span lasts the coroutine


def test_no_caller_span_makes_a_root_and_errors_are_recorded(traced: Any) -> None:
    node, _, exporter = traced
    back = node.newservice(Back)
    with pytest.raises(Exception, match="nope"):
        node.call(back, "fail")
    fail, = by_name(exporter.get_finished_spans(), "Back.fail")
    assert fail.parent is None
    assert fail.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in fail.events)


@pytest.mark.parametrize("bad", ["garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01",
                                 12345, "00-" + "a" * 300])
def test_bad_traceparent_is_ignored_and_counted(traced: Any, bad: Any) -> None:
    node, _, exporter = traced
    back, front = node.newservice(Back), node.newservice(Front)
    node.call(front, "raw", back, ("note", ("x",), bad))
    wait_for(lambda: node.call(back, "notes_seen") == ["x"])
    note, = by_name(exporter.get_finished_spans(), "Back.note")
    assert note.parent is None  # a new root, not a forged or broken parent
    assert node.stats()["tracing"] == {"bad_context": 1}


def test_untraced_node_serves_traced_payloads(node: Node) -> None:
    assert not node.tracing
    back, front = node.newservice(Back), node.newservice(Front)
    tp = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    node.call(front, "raw", back, ("note", ("y",), tp))
    node.call(front, "raw", back, ["note", ["z"], tp])  # as msgpack hands it over: lists
    wait_for(lambda: node.call(back, "notes_seen") == ["y", "z"])
    assert node.stats()["tracing"] is None
    assert node.stats()["drops"] == {}


def test_tracing_without_opentelemetry_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from node import ConfigError

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'skymesh\[tracing\]'"):
        Node(tracing=True)


RELOAD_V1 = '''
from node import Service, expose


class Napper(Service):
    @expose
    async def nap(self, back):
        await self.sleep(0.01)
        return await self.call(back, "work", 1)
'''

RELOAD_V2 = RELOAD_V1.replace('self.call(back, "work", 1)', 'self.call(back, "work", 10)')


def test_tracing_survives_a_live_reload(traced: Any, module: Any) -> None:
    import sys

    node, provider, exporter = traced
    name = module(RELOAD_V1)
    back = node.newservice(Back)
    napper = node.newservice(sys.modules[name].Napper)
    assert node.call(napper, "nap", back) == 2
    module(RELOAD_V2)
    node.reload(name)
    exporter.clear()
    with provider.get_tracer("test").start_as_current_span("request"):
        assert node.call(napper, "nap", back) == 20  # the new code runs
    spans = exporter.get_finished_spans()
    nap, = by_name(spans, "Napper.nap")
    work, = by_name(spans, "Back.work")
    # the call after the await still has the handler's span as parent: the new class's
    # async handler got the wrapped table (else the span would have ended at the await)
    assert work.parent is not None and work.parent.span_id == nap.context.span_id
    assert nap.end_time >= work.end_time
