"""The service each node of ``docker-compose.yml`` runs (``examples.cluster_demo:ClusterDemo``).

It makes a node's presence visible cluster-wide: a global name ``demo.<node id>``
and a place in the group ``demo``, both gone when the node is.
"""

from __future__ import annotations

import os
import socket

from node import Service, expose, format_handle


class ClusterDemo(Service):
    """Answers ``whoami`` and ``ping``; registered as ``demo.<node id>``."""

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
