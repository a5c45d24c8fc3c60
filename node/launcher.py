"""``.launcher``: lists the node's services and their stats (skynet's launcher)."""

from __future__ import annotations

import builtins
from typing import Any

from ._cluster import LAUNCHER_PREFIX, UNIQUE_PREFIX
from .service import Service, expose


class Launcher(Service):
    """Answers ``list`` and ``stat`` about the services of this node; on the master it
    hosts cluster-unique services other nodes ask for."""

    async def on_start(self) -> None:
        await self.register(f"{LAUNCHER_PREFIX}{self._node.node_id}")

    @expose
    def host_unique(self, path: str, args: builtins.list[Any]) -> None:
        """Start the cluster-unique service ``path`` here if this node is the master."""
        if self._node._hosting_unique:
            self._node._host_unique(UNIQUE_PREFIX + path, path, tuple(args))

    @expose
    def list(self) -> dict[str, str]:
        """``{address: class name}`` for every live service."""
        return {s["address"]: s["class"] for s in self._node.services()}

    @expose
    def stat(self) -> builtins.list[dict[str, Any]]:
        """Per-service stats: messages handled, mailbox length, CPU time, pending calls."""
        return self._node.services()

    @expose
    def node_stat(self) -> dict[str, Any]:
        """Node-wide figures (drops by reason, workers, timers)."""
        return self._node.stats()
