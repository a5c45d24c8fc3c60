"""``.launcher``: lists the node's services and their stats (skynet's launcher)."""

from __future__ import annotations

import builtins
from typing import Any

from .._lifecycle import LAUNCHABLE, resolve_class
from .._unique import LAUNCHER_PREFIX
from ..node import Node
from ..service import Service, expose
from ..supervisor import Supervisor

HOST_WAIT_TURNS = 100  # x 50 ms: how long a master waits for a unique spec to reach it


class Launcher(Service):
    """Answers ``list`` and ``stat`` about the services of this node; on the master it
    hosts cluster-unique services other nodes ask for."""

    async def on_start(self) -> None:
        await self.register(f"{LAUNCHER_PREFIX}{Node.of(self).node_id}")

    @expose
    async def host_unique(self, path: str) -> bool:
        """Start the cluster-unique service ``path`` here if this node is the master.

        Only a spec stored in cluster config under ``@unique:<path>`` is
        started, with the class and arguments stored there; nothing in the
        message chooses code. The asking node wrote the spec just before, so
        this node's config cache may not hold it yet: wait for it a little.
        False when not master or no such spec appears.
        """
        node = Node.of(self)
        for _ in range(HOST_WAIT_TURNS):
            if node.host_unique(str(path)):
                return True
            if not self.is_master():
                return False
            await self.sleep(0.05)
        return False

    @expose
    async def spawn(self, path: str, args: builtins.list[Any], name: str | None = None) -> int:
        """Start ``path`` here for another node (``newservice(..., node=N)``), if this
        node allows it (``@launchable`` or config ``services``). Raises
        ``PermissionError`` otherwise; nothing is imported before the check."""
        node = Node.of(self)
        if not isinstance(path, str) or not node.may_launch(path):
            raise PermissionError(f"{path!r} may not be started from another node")
        # A supervisor starts the children its arguments name: allowed by config alone it
        # would let a message choose code. Only an explicitly @launchable one may come.
        if issubclass(resolve_class(path), Supervisor) and path not in LAUNCHABLE:
            raise PermissionError(f"{path!r} is a supervisor: mark it @launchable to allow it")
        return await self.newservice(path, *args, name=name)

    @expose
    def list(self) -> dict[str, str]:
        """``{address: class name}`` for every live service."""
        return {s["address"]: s["class"] for s in Node.of(self).services()}

    @expose
    def stat(self) -> builtins.list[dict[str, Any]]:
        """Per-service stats: messages handled, mailbox length, CPU time, pending calls."""
        return Node.of(self).services()

    @expose
    def node_stat(self) -> dict[str, Any]:
        """Node-wide figures (drops by reason, workers, timers)."""
        return Node.of(self).stats()
