"""The admin endpoint and tracing with real ZooKeeper and Redis: /healthz and /readyz follow
the coordination session (ZooKeeper stopped and started again), lock waits and the
cross-node call histogram are scraped, and one request followed across three nodes on the
in-process harbor is ONE trace."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harbor import InprocHub, InprocTransport
from node import Node, Service, expose
from tests.conftest import wait_for
from tests.unit.test_admin import admin_port, get, sample, scrape

pytestmark = pytest.mark.integration


class Locker(Service):
    @expose
    async def locked(self, key: str) -> int:
        async with self.lock(key, ttl=5, wait=5) as held:
            return int(held.fence)


class Hop(Service):
    """Calls the next hop (if any), then tells it something; the last hop answers."""

    @expose
    async def hop(self, path: list[int], x: int) -> int:
        if not path:
            return x + 1
        result: int = await self.call(path[0], "hop", path[1:], x + 1)
        self.send(path[0], "seen", result)
        return result

    @expose
    def seen(self, result: int) -> None:
        self.last = result


def test_health_follows_the_coordination_session(
    servers: dict[str, str], cluster: str, faults: Any, tmp_path: Any
) -> None:
    n = Node(node_id=0, cluster=cluster, zk_hosts=servers["zk"], redis_url=servers["redis"],
             session_timeout=6.0, admin_port=0, log_file=str(tmp_path / "log"))
    n.start()
    try:
        port = admin_port(n)
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ok\n")
        h = n.newservice(Locker)
        assert n.call(h, "locked", "k") >= 1
        fams = scrape(port)
        assert sample(fams, "skymesh_coord_lock_waits", outcome="acquired") == 1
        assert sample(fams, "skymesh_coord_lock_waiting") == 0
        faults.stop_zk()
        try:
            status, text = wait_for(lambda: (r := get(port, "/healthz"))[0] == 503 and r)
            assert "coordination session" in text
            assert get(port, "/readyz")[0] == 503
            fams = scrape(port)  # metrics still served while unhealthy
            assert sample(fams, "skymesh_coord_session_state", state="connected") == 0
        finally:
            faults.start_zk()
        wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=30)
        wait_for(lambda: get(port, "/readyz")[0] == 200, timeout=30)
    finally:
        n.stop()


@pytest.fixture
def make_nodes(
    servers: dict[str, str], cluster: str, tmp_path: Any
) -> Iterator[Callable[..., list[Node]]]:
    hub = InprocHub()
    nodes: list[Node] = []

    def factory(node_id: int, inc: int, deliver: Any, pub: Any, down: Any) -> InprocTransport:
        return InprocTransport(node_id, inc, deliver, pub, down, hub=hub)

    def make(tracing: list[bool], provider: Any = None) -> list[Node]:
        for i, on in enumerate(tracing, start=1):
            n = Node(node_id=i, cluster=cluster, zk_hosts=servers["zk"], session_timeout=6.0,
                     transport=factory, log_file=str(tmp_path / f"log{i}"), admin_port=0,
                     tracing=on, tracer_provider=provider if on else None)
            n.start()
            nodes.append(n)
        ids = set(range(1, len(tracing) + 1))
        wait_for(lambda: all(set(n.members()) >= ids for n in nodes))
        return nodes

    yield make
    for n in nodes:
        n.stop()


def test_one_request_across_three_nodes_is_one_trace(make_nodes: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    a, b, c = make_nodes([True, True, True], provider)
    ha, hb, hc = a.newservice(Hop), b.newservice(Hop), c.newservice(Hop)
    with provider.get_tracer("test").start_as_current_span("request") as root:
        assert a.call(ha, "hop", [hb, hc], 0) == 3
    wait_for(lambda: len([s for s in exporter.get_finished_spans() if s.name == "Hop.seen"]) == 2)
    spans = exporter.get_finished_spans()
    by_service = {}
    for s in spans:
        assert s.context.trace_id == root.get_span_context().trace_id, s.name  # ONE trace
        if s.name == "Hop.hop":
            by_service[s.attributes["skymesh.service"]] = s
    assert set(by_service) == {ha, hb, hc}
    span_a, span_b, span_c = by_service[ha], by_service[hb], by_service[hc]
    assert span_a.parent.span_id == root.get_span_context().span_id
    assert span_b.parent.span_id == span_a.context.span_id  # node 1 -> node 2
    assert span_c.parent.span_id == span_b.context.span_id  # node 2 -> node 3
    seen = {s.attributes["skymesh.service"]: s for s in spans if s.name == "Hop.seen"}
    assert seen[hb].parent.span_id == span_a.context.span_id  # sends carry it too
    assert seen[hc].parent.span_id == span_b.context.span_id
    assert len(spans) == 6  # request, three hops, two sends: nothing else, nothing lost

    fams = scrape(admin_port(a))  # the cross-node round trip was timed on node 1
    count = "skymesh_remote_call_seconds_count"
    assert sample(fams, "skymesh_remote_call_seconds", count) == 1
    assert sample(fams, "skymesh_harbor_frames_out") >= 1
    assert sample(fams, "skymesh_harbor_peers") == 2
    assert sample(fams, "skymesh_cluster_members") == 3


def test_a_traced_caller_and_an_untraced_node(make_nodes: Any) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    a, b = make_nodes([True, False], provider)
    ha, hb = a.newservice(Hop), b.newservice(Hop)
    with provider.get_tracer("test").start_as_current_span("request"):
        assert a.call(ha, "hop", [hb], 0) == 2  # node 2 reads (method, args, traceparent)
    wait_for(lambda: b.service(hb).__dict__.get("last") == 2)
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["Hop.hop", "request"]
    assert b.stats()["drops"] == {}
