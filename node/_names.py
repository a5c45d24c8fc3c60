"""Names and groups: node-local ``.names``, cluster-wide names, service groups.

A name starting with ``.`` lives in this node's table; any other name is
global and lives in coordination (read from coord's watch-fed cache, written
on coord's threads). Groups are coordination's too: ``group(name, key)``
picks one live member by consistent hashing. The router resolves names and
groups through :meth:`Names.resolve`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from coord.errors import NameNotFound, NameTaken

from .address import Group, format_handle
from .core.suspend import suspend
from .errors import CallTimeout, ServiceNotFound
from .message import REPLY

if TYPE_CHECKING:
    from ._coord_link import CoordLink
    from ._router import Router
    from .core.servicecore import ServiceCore

__all__ = ["Names"]


class Names:
    """Every name and group lookup of the node."""

    def __init__(self, router: Router, coord: CoordLink) -> None:
        self._router = router
        self._coord = coord
        self._lock = threading.Lock()
        # Under _lock: name -> handle, handle -> its names, name -> (handle, session) waiting.
        self._local: dict[str, int] = {}
        self._names_of: dict[int, set[str]] = {}
        self._waiters: dict[str, list[tuple[int, int]]] = {}

    # -- lookups -----------------------------------------------------------------------

    def lookup(self, name: str) -> int | None:
        """The handle holding ``name`` now (never waits)."""
        if name.startswith("."):
            return self._local.get(name)
        return self._coord.coord.query_name(name)

    def resolve(self, dest: Any, strict: bool) -> int | None:
        """A name or group as a handle; ``strict``: raise ``ServiceNotFound`` if none."""
        if isinstance(dest, str):
            found = self.lookup(dest)
            if found is None and strict:
                raise ServiceNotFound(f"no service named {dest!r}")
            return found
        if isinstance(dest, Group):
            member = self._coord.coord.pick(dest.name, dest.key)
            if member is None and strict:
                raise ServiceNotFound(f"group {dest.name!r} has no members")
            return member
        raise TypeError(f"not a destination: {dest!r}")

    def handle_of(self, dest: Any) -> int:
        """A handle as is, or the handle a name or group resolves to (else raises)."""
        if dest.__class__ is int:
            return int(dest)
        found = self.resolve(dest, True)
        assert found is not None
        return found

    def local_names(self) -> dict[str, int]:
        """Every node-local name and its holder."""
        with self._lock:
            return dict(self._local)

    def names_of(self, handle: int) -> list[str]:
        """The node-local names ``handle`` holds."""
        with self._lock:
            return sorted(self._names_of.get(handle, ()))

    # -- registration -----------------------------------------------------------------

    def register_local(self, svc: ServiceCore, name: str) -> None:
        """Give ``svc`` the node-local ``name`` now; wake whoever waits for it."""
        if not name.startswith("."):
            raise ValueError(f"name= at spawn takes a local '.name'; use register() for {name!r}")
        services = self._router.services
        with self._lock:
            holder = self._local.get(name)
            if holder is not None and holder != svc.handle and holder in services:
                raise NameTaken(f"{name!r} is held by {format_handle(holder)}")
            self._local[name] = svc.handle
            self._names_of.setdefault(svc.handle, set()).add(name)
            waiters = self._waiters.pop(name, [])
        for handle, session in waiters:
            self._router.reply(svc.handle, handle, session, REPLY, svc.handle)

    async def register(self, svc: ServiceCore, name: str) -> None:
        """``.name`` locally, any other name cluster-wide (raises ``NameTaken``)."""
        if name.startswith("."):
            self.register_local(svc, name)
            return
        self._coord.hold(svc.handle)
        await self._coord.op(svc, self._coord.coord.register_name, name, svc.handle)

    async def unregister(self, svc: ServiceCore, name: str) -> None:
        """Drop a name ``svc`` holds."""
        if not name.startswith("."):
            await self._coord.op(svc, self._coord.coord.unregister_name, name, svc.handle)
            return
        with self._lock:
            if self._local.get(name) == svc.handle:
                del self._local[name]
            self._names_of.get(svc.handle, set()).discard(name)

    async def query(self, svc: ServiceCore, name: str, wait: float | None) -> int | None:
        """The holder of ``name``, waiting up to ``wait`` seconds for one to appear."""
        found = self.lookup(name)
        if found is not None or not wait:
            return found
        if not name.startswith("."):
            try:
                handle: int = await self._coord.op(svc, self._coord.coord.wait_name, name, wait)
            except NameNotFound:
                return None
            return handle

        def start(s: int) -> None:
            with self._lock:
                self._waiters.setdefault(name, []).append((svc.handle, s))

        def withdraw(s: int) -> None:
            with self._lock:
                waiters = self._waiters.get(name)
                if waiters and (svc.handle, s) in waiters:
                    waiters.remove((svc.handle, s))
                    if not waiters:
                        del self._waiters[name]

        try:
            handle = await suspend(svc, start, wait, withdraw)
        except CallTimeout:
            return None
        return handle

    # -- groups ----------------------------------------------------------------------------

    async def join_group(self, svc: ServiceCore, group: str) -> None:
        """``svc`` becomes a member of ``group``."""
        self._coord.hold(svc.handle)
        await self._coord.op(svc, self._coord.coord.join_group, group, svc.handle)

    async def leave_group(self, svc: ServiceCore, group: str) -> None:
        """``svc`` leaves ``group``."""
        await self._coord.op(svc, self._coord.coord.leave_group, group, svc.handle)

    # -- retire ---------------------------------------------------------------------------

    def forget(self, handle: int) -> None:
        """A service ended: drop its local names (global ones go with the coord link)."""
        with self._lock:
            for name in self._names_of.pop(handle, ()):
                if self._local.get(name) == handle:
                    del self._local[name]
