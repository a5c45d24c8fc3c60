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
        self._remote: dict[int, set[int]] = {}  # remote target -> local watchers
        harbor.on_peer_down(self._node_down)
        harbor.on_watching(self.watches)

    def watches(self, nid: int) -> bool:
        """Whether a local service monitors a service on node ``nid``."""
        with self._lock:
            return any(node_of(t) == nid for t in self._remote if self._remote[t])

    def _down(self, watcher: int, target: int, reason: str) -> None:
        self._router.post(watcher, (target, 0, SYSTEM, ("down", (target, reason))))

    def monitor(self, watcher: int, target: int) -> None:
        """``watcher`` gets ``down`` when ``target`` ends (at once if it does not exist)."""
        if node_of(target) != self._router.node_id:
            with self._lock:
                self._remote.setdefault(target, set()).add(watcher)
            try:
                self._remote_control(watcher, target, "monitor")
            except NodeDown:
                with self._lock:
                    self._remote.get(target, set()).discard(watcher)
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
                self._remote.get(target, set()).discard(watcher)
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
            for targets in self._remote.values():
                targets.discard(handle)
        for watcher in watchers:
            self._down(watcher, handle, reason)

    def _node_down(self, nid: int) -> None:
        with self._lock:
            gone = [t for t in self._remote if node_of(t) == nid]
            notices = [(t, self._remote.pop(t)) for t in gone]
        for target, watchers in notices:
            for w in watchers:
                self._down(w, target, "nodedown")
