"""The parts of a node a service talks to, bound once per service.

``node.node.Node`` builds one :class:`Parts` per node and every service
gets it at spawn; each ``Service`` verb goes to one of these collaborators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._coord_link import CoordLink
    from ._harbor_link import HarborLink
    from ._lifecycle import Lifecycle
    from ._monitors import Monitors
    from ._names import Names
    from ._offload import Offload
    from ._router import Router
    from ._sockets.api import Sockets
    from ._unique import Uniques

__all__ = ["Parts"]


@dataclass(frozen=True, slots=True)
class Parts:
    """One node's collaborators (see ``docs/design.md``, "Layout")."""

    router: Router
    lifecycle: Lifecycle
    names: Names
    monitors: Monitors
    uniques: Uniques
    coord: CoordLink
    harbor: HarborLink
    sockets: Sockets
    offload: Offload
    started_at: float
