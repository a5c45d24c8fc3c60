"""The service every node of bench/scale.py and tests/scale runs (issue 15).

One ``ScaleProbe`` per node, registered as ``scale<node id>``. The harness
asks it what its node sees (members, names), has it call every other node
(the all-pairs sweep), and parks a call on a victim node to time how fast a
SIGKILL fails it. Times are ``time.monotonic()``, which on Linux is one
clock for every process on the machine, so the harness compares them with
its own.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from node import Node, Service, expose
from node.address import node_of

PREFIX = "scale"


class ScaleProbe(Service):
    """Registers ``scale<id>``; answers views, sweeps and kill timings."""

    async def on_start(self) -> None:
        self.nid = node_of(self.handle)
        self.left: dict[int, float] = {}  # node id -> when on_member("leave") came
        self.failed: dict[int, tuple[float, str]] = {}  # victim -> (when, error type)
        self.parked: list[Any] = []  # responders of `hang` calls, never answered
        self.watch_members()
        await self.register(f"{PREFIX}{self.nid}")

    def on_member(self, event: str, node_id: int) -> None:
        if event == "leave":
            self.left.setdefault(node_id, time.monotonic())

    @expose
    def view(self) -> dict[str, Any]:
        """What this node sees now: member ids and the ``scale*`` names it can resolve."""
        node = Node.of(self)
        names = node.coord.names()
        return {
            "node": self.nid,
            "members": sorted(node.members()),
            "names": sorted(int(n[len(PREFIX):]) for n in names if n.startswith(PREFIX)
                            and n[len(PREFIX):].isdigit()),
        }

    @expose
    def echo(self, value: Any) -> Any:
        return value

    @expose
    async def sweep(self, ids: list[int], timeout: float) -> dict[str, Any]:
        """Call ``echo`` on ``scale<id>`` for every id but ours, all at once."""
        targets = [i for i in ids if i != self.nid]
        t0 = time.monotonic()
        calls = [(f"{PREFIX}{i}", "echo", i) for i in targets]
        errors: list[str] = []
        ok = 0
        # Every call in flight at once; a failed one is its exception instance.
        results = await self.gather(*calls, timeout=timeout) if calls else []
        for i, r in zip(targets, results, strict=True):
            if r == i:
                ok += 1
            else:
                errors.append(f"{i}: {r!r}")
        return {"node": self.nid, "ok": ok, "errors": errors, "seconds": time.monotonic() - t0}

    @expose
    def hang(self, seconds: float) -> None:
        """Never answers within ``seconds``: the call stays pending on the caller."""
        # Kept, never used: the caller waits for NodeDown (or its own timeout).
        self.parked.append(self.response())
        _ = seconds

    @expose
    def arm(self, victim: int) -> bool:
        """Park a call on ``scale<victim>``; its failure time is kept for ``outcome``."""
        self.fork(self._park, victim)
        return True

    async def _park(self, victim: int) -> None:
        try:
            await self.call(f"{PREFIX}{victim}", "hang", 600, timeout=600)
            self.failed[victim] = (time.monotonic(), "answered")
        except Exception as exc:
            self.failed[victim] = (time.monotonic(), type(exc).__name__)

    @expose
    def outcome(self, victim: int) -> dict[str, Any]:
        """When (monotonic) the parked call failed and how; when the victim left membership."""
        failed = self.failed.get(victim)
        return {
            "node": self.nid,
            "failed_at": None if failed is None else failed[0],
            "error": None if failed is None else failed[1],
            "left_at": self.left.get(victim),
            "member": victim in Node.of(self).members(),
        }

    @expose
    def process(self) -> dict[str, Any]:
        """The process as it sees itself: pid, Python threads by name, harbor figures."""
        names: dict[str, int] = {}
        for t in threading.enumerate():
            key = t.name.rstrip("0123456789-")
            names[key] = names.get(key, 0) + 1
        native = {t.native_id: t.name for t in threading.enumerate()}
        return {"pid": os.getpid(), "threads": names, "native": native,
                "stats": Node.of(self).stats()}
