"""A fixed-bucket latency histogram the node fills and the admin endpoint reads.

The node keeps its own figures (no ``prometheus_client`` on the message
path); ``node.builtins.admin`` turns a :meth:`Histogram.snapshot` into a
Prometheus histogram. Observing costs one ``bisect`` and two additions; the
caller holds whatever lock already guards the event it times.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["LATENCY_BUCKETS", "Histogram"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)  # fmt: skip
"""Upper bounds in seconds (``le``); a last ``+Inf`` bucket is implied."""


class Histogram:
    """Counts per bucket and the sum of what was observed. Not thread-safe by itself:
    the owner serializes :meth:`observe` (and a racy :meth:`snapshot` is fine)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("histogram bounds must be increasing")
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation (``le`` semantics: a value equal to a bound is in it)."""
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> tuple[list[tuple[float, int]], float]:
        """``([(upper bound, cumulative count), ...], sum)``, ``+Inf`` last."""
        out, running = [], 0
        for bound, n in zip((*self.bounds, float("inf")), list(self.counts), strict=True):
            running += n
            out.append((bound, running))
        return out, self.total
