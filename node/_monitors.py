"""Monitors: who is told when a service ends, on this node or another.

A watcher of a local service is remembered here and gets a ``down`` notice
(``on_down(handle, reason)``) when it retires; the watcher may live on
another node (the notice then crosses the harbor). A watch of a service on
another node is sent there as a ``monitor`` control message and also kept
here, so that the node going down tells the watcher ``nodedown`` even
though the other side can no longer speak.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

from .address import node_of
from .errors import NodeDown
from .message import SYSTEM

if TYPE_CHECKING:
    from ._harbor_link import HarborLink
    from ._router import Router

__all__ = ["Monitors"]


class Monitors:
    """Local and remote monitors and their down notices."""

    def __init__(self, router: Router, harbor: HarborLink) -> None:
        self._router = router
        self._harbor = harbor
        self._lock = threading.Lock()
        self._watchers: dict[int, set[int]] = {}  # local target -> watchers (any node)
        # Remote watches, by node: node id -> remote target -> local watchers, and
        # local watcher -> the remote targets it watches. Invariant: no empty set or
        # dict is kept, so ``watches`` is one probe (the harbor asks it per idle peer
        # per tick) and a node that no one watches costs nothing.
        self._remote: dict[int, dict[int, set[int]]] = {}
        self._watching: dict[int, set[int]] = {}
        harbor.on_peer_down(self._node_down)
        harbor.on_watching(self.watches)

    def watches(self, nid: int) -> bool:
        """Whether a local service monitors a service on node ``nid``."""
        return nid in self._remote  # one dict probe: GIL-atomic, no lock needed

    def _add_remote(self, watcher: int, target: int) -> None:
        """Under the lock."""
        self._remote.setdefault(node_of(target), {}).setdefault(target, set()).add(watcher)
        self._watching.setdefault(watcher, set()).add(target)

    def _drop_remote(self, watcher: int, target: int) -> None:
        """Under the lock; keeps the no-empty-entries invariant."""
        nid = node_of(target)
        targets = self._remote.get(nid, {})
        watchers = targets.get(target, set())
        watchers.discard(watcher)
        if not watchers:
            targets.pop(target, None)
            if not targets:
                self._remote.pop(nid, None)
        self._unwatch(watcher, target)

    def _unwatch(self, watcher: int, target: int) -> None:
        """Under the lock: ``target`` leaves ``watcher``'s entry (dropped when empty)."""
        mine = self._watching.get(watcher, set())
        mine.discard(target)
        if not mine:
            self._watching.pop(watcher, None)

    def _down(self, watcher: int, target: int, reason: str) -> None:
        self._router.post(watcher, (target, 0, SYSTEM, ("down", (target, reason))))

    def monitor(self, watcher: int, target: int) -> None:
        """``watcher`` gets ``down`` when ``target`` ends (at once if it does not exist)."""
        if node_of(target) != self._router.node_id:
            with self._lock:
                self._add_remote(watcher, target)
            try:
                self._remote_control(watcher, target, "monitor")
            except NodeDown:
                with self._lock:
                    self._drop_remote(watcher, target)
                self._down(watcher, target, "nodedown")
            return
        with self._lock:
            if target in self._router.services:
                self._watchers.setdefault(target, set()).add(watcher)
                return
        self._down(watcher, target, "noproc")

    def demonitor(self, watcher: int, target: int) -> None:
        """Stop ``watcher``'s watch of ``target``."""
        if node_of(target) != self._router.node_id:
            with self._lock:
                self._drop_remote(watcher, target)
            with contextlib.suppress(NodeDown):  # its node is gone: so is the watch there
                self._remote_control(watcher, target, "demonitor")
            return
        with self._lock:
            self._watchers.get(target, set()).discard(watcher)

    def _remote_control(self, watcher: int, target: int, event: str) -> None:
        self._harbor.control(watcher, target, event)

    def retired(self, handle: int, reason: str) -> None:
        """``handle`` ended: tell its watchers, forget its own watches."""
        with self._lock:
            watchers = self._watchers.pop(handle, set())
            for target in list(self._watching.get(handle, ())):
                self._drop_remote(handle, target)
        for watcher in watchers:
            self._down(watcher, handle, reason)

    def _node_down(self, nid: int) -> None:
        with self._lock:
            notices = list(self._remote.pop(nid, {}).items())
            for target, watchers in notices:
                for w in watchers:
                    self._unwatch(w, target)
        for target, watchers in notices:
            for w in watchers:
                self._down(w, target, "nodedown")
