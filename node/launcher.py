"""``.launcher``: lists the node's services and their stats (skynet's launcher)."""

from __future__ import annotations

import builtins
from typing import Any

from .service import Service, expose


class Launcher(Service):
    """Answers ``list`` and ``stat`` about the services of this node."""

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
