"""The console's ``health`` command: does this node itself still work?

Three checks, each bounded in time, run from a console session (so the console's
own worker and the local TCP path are proven by the answer arriving at all):

- **coordination**: the session with ZooKeeper (or the embedded backend) is
  CONNECTED, not SUSPENDED or LOST;
- **workers**: ``.launcher`` answers a ping (a "no handler" answer counts: it
  proves a worker dispatched it) within :data:`PING_DEADLINE`;
- **harbor**: the harbor's I/O thread keeps turning: its ``ticks`` counter
  grows within :data:`HARBOR_DEADLINE` (it ticks every 0.1 s, once a second
  when idle; a stalled loop does not).

``skymesh health`` (the image's HEALTHCHECK) runs it through the local console,
besides checking membership in ZooKeeper. A frozen process never answers, and
the CLI's deadline turns that into "unhealthy" too.
"""

from __future__ import annotations

import time
from typing import Any

from coord.api import Health

from ..errors import CallError
from ..node import Node

__all__ = ["HARBOR_DEADLINE", "PING_DEADLINE", "check"]

PING_DEADLINE = 2.0  # seconds .launcher has to answer
HARBOR_DEADLINE = 2.5  # seconds for the harbor loop to tick again (every 0.1 s, 1 s when idle)
_POLL = 0.1


async def check(agent: Any) -> list[str]:
    """Run the checks from ``agent`` (a console session); one line per check.

    Raises ``RuntimeError("unhealthy: ...")`` naming every failed check.
    """
    node = Node.of(agent)
    problems: list[str] = []
    lines: list[str] = []

    health = node.coord.health
    (lines if health is Health.CONNECTED else problems).append(f"coordination {health.value}")

    t0 = time.perf_counter()
    try:
        await agent.call(node.resolve(".launcher"), "__ping__", timeout=PING_DEADLINE)
        lines.append(f"workers answer ({(time.perf_counter() - t0) * 1000:.1f} ms)")
    except CallError as exc:  # it answered: "no handler" proves a worker dispatched it
        if exc.remote_type != "NoHandler":
            problems.append(f"workers: .launcher failed the ping ({exc.remote_type})")
        else:
            lines.append(f"workers answer ({(time.perf_counter() - t0) * 1000:.1f} ms)")
    except Exception as exc:  # timed out, or no launcher at all
        problems.append(f"workers: .launcher did not answer ({type(exc).__name__})")

    beats = _ticks(node)
    if beats is None:
        lines.append("harbor: none (standalone)")
    else:
        deadline = time.monotonic() + HARBOR_DEADLINE
        now: int | None = beats
        while now is not None and now <= beats and time.monotonic() < deadline:
            await agent.sleep(_POLL)
            now = _ticks(node)
        if now is not None and now > beats:
            lines.append("harbor loop turns")
        else:
            problems.append(f"harbor: its loop did not turn in {HARBOR_DEADLINE:.1f}s")
    if problems:
        raise RuntimeError("unhealthy: " + "; ".join(problems))
    return lines


def _ticks(node: Node) -> int | None:
    """The harbor's ``ticks`` counter; None when the node has no network harbor."""
    harbor = node.stats().get("harbor") or {}
    value = harbor.get("ticks")
    return value if isinstance(value, int) else None
