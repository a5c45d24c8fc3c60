"""The node's figures as Prometheus metrics: a ``prometheus_client`` custom Collector.

Nothing here counts anything: the node keeps its own figures (the runner's
per-service counters, the scheduler's busy time, the harbor link's
round-trip histogram and the transport's counters, the coordination link's
session state and lock waits, the offload pool), and :class:`NodeCollector`
reads them at scrape time and hands them to ``prometheus_client``, which
writes the exposition format. Reads are racy (stats, not decisions).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["HARBOR_GAUGES", "NodeCollector"]

HARBOR_GAUGES = frozenset({"peers", "queued", "pending_calls", "inbound_calls"})
"""Harbor figures that are levels, not running totals; every other key of
``transport.stats()`` is a counter (``drop_<reason>`` becomes one family by reason)."""

SESSION_STATES = ("connected", "suspended", "lost")

_BAD_NAME = re.compile(r"[^a-zA-Z0-9_]")


class NodeCollector(Collector):
    """Collects one node's figures at each scrape; ``extra()`` adds the endpoint's own."""

    def __init__(self, node: Node, extra: Callable[[], dict[str, int]] | None = None) -> None:
        self.node = node
        self.extra = extra or dict

    def collect(self) -> Iterator[Metric]:
        """Every family, read now."""
        node = self.node
        stats = node.stats()
        nid = str(node.node_id)
        yield from self._services(node)
        yield from self._node(stats, nid)
        yield from self._harbor(node, stats.get("harbor") or {})
        yield from self._coord(node, stats)
        off = stats.get("offload") or {}
        for key in ("threads", "queued", "running"):
            yield GaugeMetricFamily(f"skymesh_offload_{key}", f"Offload pool: {key}",
                                    value=off.get(key, 0))
        yield CounterMetricFamily("skymesh_offload_done", "Offload jobs finished",
                                  value=off.get("done", 0))
        admin = CounterMetricFamily("skymesh_admin_requests", "Admin endpoint requests",
                                    labels=["outcome"])
        for outcome, n in sorted(self.extra().items()):
            admin.add_metric([outcome], n)
        yield admin

    def _services(self, node: Node) -> Iterator[Metric]:
        labels = ["service", "class"]
        fams: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "messages": CounterMetricFamily(
                "skymesh_service_messages", "SEND and CALL messages handled", labels=labels),
            "calls": CounterMetricFamily(
                "skymesh_service_calls", "CALLs whose handler ran to its end", labels=labels),
            "errors": CounterMetricFamily(
                "skymesh_service_errors", "Handlers that raised, and no-handler messages",
                labels=labels),
            "cpu": CounterMetricFamily(
                "skymesh_service_cpu_seconds", "Time on a worker (profile = true)",
                labels=labels),
            "mailbox": GaugeMetricFamily(
                "skymesh_service_mailbox_length", "Messages waiting in the mailbox",
                labels=labels),
            "pending_calls": GaugeMetricFamily(
                "skymesh_service_pending_calls", "Coroutines waiting for a reply or event",
                labels=labels),
        }
        for svc in node.services():
            values = [svc["address"], svc["class"]]
            for key, fam in fams.items():
                fam.add_metric(values, svc.get(key, 0))
        yield from fams.values()

    def _node(self, stats: dict[str, Any], nid: str) -> Iterator[Metric]:
        info = GaugeMetricFamily("skymesh_node_info", "This node (value 1)", labels=["node"])
        info.add_metric([nid], 1)
        yield info
        yield GaugeMetricFamily("skymesh_services", "Live services", value=stats["services"])
        drops = CounterMetricFamily("skymesh_drops", "Messages dropped, by reason",
                                    labels=["reason"])
        for reason, n in sorted(stats["drops"].items()):
            drops.add_metric([reason], n)
        yield drops
        busy = CounterMetricFamily("skymesh_worker_busy_seconds",
                                   "Time each worker spent running services (profile = true)",
                                   labels=["worker"])
        for i, seconds in enumerate(stats["worker_busy"]):
            busy.add_metric([str(i)], seconds)
        yield busy
        yield GaugeMetricFamily("skymesh_workers_sleeping", "Workers asleep now",
                                value=stats["sleeping"])
        yield GaugeMetricFamily("skymesh_global_queue_length", "Mailboxes waiting for a worker",
                                value=stats["global_queue"])
        yield GaugeMetricFamily("skymesh_timers_pending", "Timers armed", value=stats["timers"])
        yield CounterMetricFamily("skymesh_stuck_reports", "Watchdog reports of a stuck worker",
                                  value=stats["stuck_reports"])
        yield GaugeMetricFamily("skymesh_uptime_seconds", "Seconds since the node started",
                                value=stats["uptime"])
        tracing = stats.get("tracing")
        if tracing is not None:
            yield CounterMetricFamily("skymesh_tracing_bad_context",
                                      "Received traceparents ignored as malformed",
                                      value=tracing["bad_context"])

    def _harbor(self, node: Node, harbor: dict[str, Any]) -> Iterator[Metric]:
        buckets, total = node.call_latency()
        yield HistogramMetricFamily(
            "skymesh_remote_call_seconds", "Round trip of calls to services on other nodes",
            buckets=[(_le(b), n) for b, n in buckets], sum_value=total,
        )
        drops = CounterMetricFamily("skymesh_harbor_drops", "Harbor drops, by reason",
                                    labels=["reason"])
        for key, n in sorted(harbor.items()):
            if key.startswith("drop_"):
                drops.add_metric([key[5:]], n)
            elif key in HARBOR_GAUGES:
                yield GaugeMetricFamily(f"skymesh_harbor_{_name(key)}", f"Harbor: {key}",
                                        value=n)
            else:
                yield CounterMetricFamily(f"skymesh_harbor_{_name(key)}", f"Harbor: {key}",
                                          value=n)
        yield drops

    def _coord(self, node: Node, stats: dict[str, Any]) -> Iterator[Metric]:
        coord = stats["coord"]
        state = GaugeMetricFamily("skymesh_coord_session_state",
                                  "Coordination session state (1 for the current one)",
                                  labels=["state"])
        for name in SESSION_STATES:
            state.add_metric([name], 1 if coord["health"] == name else 0)
        yield state
        master_id, epoch = node.master
        yield GaugeMetricFamily("skymesh_coord_is_master", "1 when this node is the master",
                                value=1 if master_id == node.node_id else 0)
        yield GaugeMetricFamily("skymesh_coord_master_epoch", "Master epoch last seen",
                                value=epoch)
        yield GaugeMetricFamily("skymesh_cluster_members", "Live nodes this node sees",
                                value=len(node.members()))
        yield GaugeMetricFamily("skymesh_coord_lock_waiting", "Lock requests waiting now",
                                value=coord["waiting"])
        locks = CounterMetricFamily("skymesh_coord_lock_waits", "Lock waits ended, by outcome",
                                    labels=["outcome"])
        for outcome in ("acquired", "failed"):
            locks.add_metric([outcome], coord[outcome])
        yield locks
        yield CounterMetricFamily("skymesh_coord_lock_wait_seconds",
                                  "Seconds waited for locks that were acquired",
                                  value=coord["wait_seconds"])


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def _name(key: str) -> str:
    return _BAD_NAME.sub("_", key)
