"""The service each node of ``docker-compose.yml`` runs (``examples.cluster_demo:ClusterDemo``).

It makes a node's presence visible cluster-wide: a global name ``demo.<node id>``
and a place in the group ``demo``, both gone when the node is. ``ask`` makes one
node's demo call another's, so a single call from outside crosses two nodes;
``locked`` takes a cluster-wide lock (Redis or ZooKeeper) and reports its fence.
"""

from __future__ import annotations

import os
import socket
import time

from node import Service, expose, format_handle


class ClusterDemo(Service):
    """Answers ``whoami``, ``ping``, ``ask`` and ``locked``; registered as ``demo.<node id>``."""

    async def on_start(self) -> None:
        self.node_id = self.handle >> 32
        self.name = f"demo.{self.node_id}"
        await self.register(self.name)
        await self.join_group("demo")
        self.log(f"{self.name} up at {format_handle(self.handle)}")

    @expose
    def whoami(self) -> dict[str, object]:
        return {"name": self.name, "node": self.node_id, "handle": format_handle(self.handle),
                "host": socket.gethostname(), "pid": os.getpid()}

    @expose
    def ping(self) -> str:
        return "pong"

    @expose
    async def ask(self, name: str) -> dict[str, object]:
        """``whoami`` of the service called ``name`` (another node's demo), asked from here."""
        answer: dict[str, object] = await self.call(name, "whoami")
        return {"asked_by": self.name, "answer": answer}

    @expose
    async def locked(self, key: str, backend: str = "redis", hold: float = 0.0) -> int:
        """Take the cluster-wide lock ``key``, hold it ``hold`` seconds, return its fence."""
        async with self.lock(key, ttl=5, wait=10, backend=backend) as held:
            if hold:
                await self.sleep(hold)
            fence: int = held.fence
            return fence

    @expose
    async def contend(self, key: str, rounds: int, hold: float, backend: str = "redis") -> int:
        """Take lock ``key`` ``rounds`` times, holding it ``hold`` s; log (fence, enter, exit)."""
        log = self.__dict__.setdefault("contention", [])
        for _ in range(rounds):
            async with self.lock(key, ttl=5, wait=30, backend=backend) as held:
                enter = time.time()
                await self.sleep(hold)
                log.append((held.fence, enter, time.time()))
        return rounds

    @expose
    def contend_everywhere(self, key: str, rounds: int, hold: float, backend: str = "redis") -> int:
        """Start :meth:`contend` on every node's demo at once (one-way sends)."""
        members = self.watch_members()
        for node_id in members:
            self.send(f"demo.{node_id}", "contend", key, rounds, hold, backend)
        return len(members)

    @expose
    def contention_log(self) -> list[tuple[int, float, float]]:
        """What :meth:`contend` recorded here."""
        return list(self.__dict__.get("contention", []))
