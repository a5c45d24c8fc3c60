"""Services the supervisor cluster tests run in real node processes.

Nodes list ``Boss`` in ``SKYMESH_SERVICES``; importing this module for it
registers ``Crashy`` as launchable, so other nodes may place it there.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from node import Service, Supervisor, expose, launchable
from node.address import node_of

# Per process: how many coming starts of the Crashy keyed so must fail, and starts seen.
FAILS: dict[str, int] = defaultdict(int)
STARTS: dict[str, int] = defaultdict(int)


class Boss(Service):
    """Starts supervisors on its node for the test driver, under a global name."""

    async def on_start(self, name: str) -> None:
        await self.register(name)

    @expose
    async def supervise(self, children: list[dict[str, Any]], options: dict[str, Any]) -> int:
        handle: int = await self.newservice(Supervisor, children, options)
        return handle

    @expose
    def fail_next(self, key: str, times: int) -> None:
        """The next ``times`` starts of Crashy ``key`` on this node fail."""
        FAILS[key] = times

    @expose
    def starts(self, key: str) -> int:
        return STARTS[key]


@launchable
class Crashy(Service):
    """A child that fails its start while FAILS says so, else takes a global name."""

    async def on_start(self, key: str, name: str | None = None) -> None:
        STARTS[key] += 1
        if FAILS[key] > 0:
            FAILS[key] -= 1
            raise RuntimeError(f"{key}: start refused ({FAILS[key]} more)")
        if name:
            await self.register(name)

    @expose
    def where(self) -> dict[str, int]:
        return {"node": node_of(self.handle), "pid": os.getpid()}
