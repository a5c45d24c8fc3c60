"""Supervision: a service that starts children, watches them and restarts them.

A :class:`Supervisor` is an ordinary service (Erlang/OTP's supervisor, Akka's
supervision with backoff). It learns of a child's end only through
``monitor`` → ``on_down(handle, reason)``, like any other service would.

What each ``on_down`` reason means for a ``transient`` child (restarted only
after an *abnormal* end; OTP treats ``normal`` and ``shutdown`` as normal)::

    "exit"          the child called exit() itself              normal
    "stop"          its node is shutting down (Node.stop)        normal
    "kill"          someone killed it (kill(), the console)      abnormal
    "start failed"  it was killed before its on_start finished   abnormal
    "nodedown"      its node died or left the cluster            abnormal
    "noproc"        it was gone before the watch was set         abnormal (unknown end)

A ``permanent`` child is restarted after any end, a ``temporary`` one never.
A local child that ends with ``"stop"`` is never restarted: only
``Node.stop`` sends it, and it stops the supervisor too.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ._child_spec import Child, ChildSpec, parse_children, parse_options
from .address import format_handle, node_of
from .errors import CallTimeout, NodeDown
from .service import Service, expose

__all__ = ["ChildSpec", "Supervisor"]

NORMAL_ENDS = frozenset({"exit", "stop"})  # the on_down reasons of a normal end
_ENDED = "supervisor:child-ended"  # wait/wakeup token tag: (_ENDED, handle)
_POLL = 0.02  # seconds between looks at a child being stopped or a name being freed


class Supervisor(Service):
    """Starts children in order, restarts them by strategy, stops them in reverse order.

    ``on_start(children, options=None)``: ``children`` is a list of
    :class:`ChildSpec` (or their dict forms); ``options`` a dict of
    ``strategy`` (``one_for_one``: only the failed child; ``one_for_all``:
    all of them; ``rest_for_one``: it and those after it), ``intensity``
    and ``period`` (more than ``intensity`` restarts within ``period``
    seconds: the supervisor stops its children in reverse order and exits,
    so its own supervisor decides), ``backoff_base``, ``backoff_factor``,
    ``backoff_max``, ``jitter``, ``reset_after``, ``name_wait``. Each child's
    ``on_start`` has finished before the next child starts, and all of them
    before ``newservice(Supervisor, ...)`` returns.

    A child on another node whose node dies is restarted on its spec's node
    if that node is a member again (and not reported down since), otherwise
    on the supervisor's own node.

    Example::

        sup = await self.newservice(Supervisor, [
            ChildSpec(Store, name=".store"),
            ChildSpec("game.rooms:Rooms", args=(8,), name="rooms", node=2),
        ], {"strategy": "rest_for_one", "intensity": 5, "period": 10})
        await self.call(sup, "children")
    """

    async def on_start(
        self, children: Sequence[ChildSpec | Mapping[str, Any]],
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self._opts = parse_options({} if options is None else options)
        self._children = parse_children(children)
        self._by_handle: dict[int, Child] = {}
        self._restart_log: deque[float] = deque()  # times of restarts within the period
        self._suspect: set[int] = set()  # nodes reported down, until they join again
        self._live = False  # RUNNING: on_down notices arrive (none while starting or stopping)
        self._giving_up = False
        self._rng = random.Random()
        if any(c.spec.node is not None for c in self._children):
            self.watch_members()  # on_member("join") clears a suspect node
        for child in self._children:
            if not await self._bring_up(child, first=True):
                await self._stop_all()
                raise RuntimeError(f"supervisor gave up starting child {child.id!r}: "
                                   f"more than {self._opts.intensity} restarts in "
                                   f"{self._opts.period}s")
        # Down notices are dropped while a service starts: watch again now (a child that
        # already ended answers "noproc" at once, and it arrives once we are running).
        for child in self._children:
            if child.handle is not None:
                self.monitor(child.handle)
        self._live = True

    async def on_stop(self) -> None:
        self._live = False
        await self._stop_all()

    # -- notices -------------------------------------------------------------------------

    def on_down(self, handle: int, reason: str) -> None:
        child = self._by_handle.pop(handle, None)
        if child is None or child.handle != handle:
            return  # a stale or repeated notice (e.g. "noproc" after the real one)
        child.handle, child.last_handle, child.last_exit = None, handle, reason
        if child.state == "stopping":
            child.state = "stopped"
            self.wakeup((_ENDED, handle))  # _end_child waits for this
            return
        remote = node_of(handle) != self._my_node
        if reason == "nodedown" or (remote and reason == "stop"):
            self._suspect.add(node_of(handle))
        if not self._should_restart(child, reason, remote):
            child.state = "stopped"
            self.log(f"child {child.id!r} ended ({reason}); not restarted ({child.spec.restart})")
            return
        child.state = "down"
        self.fork(self._recover, child)

    def on_member(self, event: str, node_id: int) -> None:
        if event == "join":
            self._suspect.discard(node_id)

    # -- introspection and control ----------------------------------------------------------

    @expose
    def children(self) -> list[dict[str, Any]]:
        """Each child in spec order: id, class, name, node, handle, state, restarts,
        last end reason and the supervisor-clock times (``now()``) of recent restarts."""
        return [{
            "id": c.id, "class": c.spec.class_name, "name": c.spec.name,
            "node": None if c.handle is None else node_of(c.handle),
            "handle": c.handle, "state": c.state, "restart": c.spec.restart,
            "restarts": c.restarts, "last_exit": c.last_exit,
            "restarted_at": list(c.restarted_at),
        } for c in self._children]

    @expose
    def count_children(self) -> dict[str, int]:
        """OTP's count_children: specs, and children running, restarting, stopped."""
        states = [c.state for c in self._children]
        return {"specs": len(states), "active": states.count("running"),
                "restarting": sum(s in ("down", "restarting", "starting") for s in states),
                "stopped": states.count("stopped")}

    @expose
    async def stop_child(self, child_id: str) -> bool:
        """Stop a child and keep it stopped (until :meth:`restart_child`); False if it
        was not running."""
        child = self._find(child_id)
        async with self.critical():
            if child.handle is None:
                child.state = "stopped"
                return False
            await self._end_child(child)
            return True

    @expose
    async def restart_child(self, child_id: str) -> int:
        """Stop the child if it runs and start it again now (no backoff, not counted
        against the intensity); returns its new handle."""
        child = self._find(child_id)
        async with self.critical():
            await self._end_child(child)
            child.failures = 0
            if not await self._bring_up(child, first=True):
                child.state = "stopped"
                raise RuntimeError(f"child {child_id!r} did not start: over the intensity")
            assert child.handle is not None
            return child.handle

    # -- restarting -------------------------------------------------------------------------

    @property
    def _my_node(self) -> int:
        return node_of(self.handle)

    def _should_restart(self, child: Child, reason: str, remote: bool) -> bool:
        if self._giving_up or not self._live or child.spec.restart == "temporary":
            return False
        if reason == "stop" and not remote:
            return False  # our own node is stopping: so are we
        return child.spec.restart == "permanent" or reason not in NORMAL_ENDS

    async def _recover(self, failed: Child) -> None:
        """Restart ``failed`` and, by the strategy, its siblings. One recovery at a time."""
        async with self.critical():
            if failed.state != "down" or self._giving_up or not self._live:
                return  # already restarted with a group, or we are ending
            if not self._note_restart():
                await self._give_up(failed)
                return
            strategy = self._opts.strategy
            if strategy == "one_for_one":
                group = [failed]
            else:
                i = self._children.index(failed)
                group = self._children if strategy == "one_for_all" else self._children[i:]
            group = [c for c in group if c is failed or c.state in ("running", "down")]
            for c in reversed(group):  # siblings stop in reverse order ...
                if c.handle is not None:
                    await self._end_child(c)
            for c in group:  # ... and start again in spec order (a temporary one stays down)
                if c is not failed and c.spec.restart == "temporary":
                    continue
                if not await self._bring_up(c, first=False, failed=c is failed):
                    await self._give_up(c)
                    return

    async def _bring_up(self, child: Child, first: bool, failed: bool = False) -> bool:
        """Start ``child``, retrying failed starts with backoff; False past the intensity.

        ``first``: the initial start (not a restart). ``failed``: this child's own
        end caused the restart, so it waits its backoff delay first.
        """
        attempt = 0
        while True:
            if attempt or not first:
                child.state = "restarting"
                if attempt and not self._note_restart():
                    return False
                if failed or attempt:
                    await self.sleep(self._backoff(child))
                child.restarts += 1
                child.restarted_at.append(round(self.now(), 4))
            await self._name_released(child)  # no-op unless an earlier instance had it
            attempt += 1
            target = self._placement(child)
            try:
                handle = await self._spawn(child.spec, target)
            except Exception as err:
                if isinstance(err, NodeDown) and target is not None:
                    self._suspect.add(target)
                self.log(f"child {child.id!r} failed to start (attempt {attempt}): "
                         f"{type(err).__name__}: {err}", level="warning")
                continue
            child.handle, child.state, child.started_at = handle, "running", self.now()
            self._by_handle[handle] = child
            self.monitor(handle)
            if not first:
                self.log(f"child {child.id!r} restarted as {format_handle(handle)} "
                         f"(after {child.last_exit or 'a failed start'})")
            return True

    async def _spawn(self, spec: ChildSpec, node: int | None) -> int:
        local = spec.name if spec.name is not None and spec.name.startswith(".") else None
        if node is None:
            return await self.newservice(spec.cls, *spec.args, name=local)
        return await self.newservice(spec.cls, *spec.args, name=local, node=node)

    def _placement(self, child: Child) -> int | None:
        """Where to start ``child``: its spec's node if that is a member and not reported
        down since it last joined; otherwise (``"restarted elsewhere"``) this node."""
        want = child.spec.node
        if want is None or want == self._my_node:
            return None
        if want in self._suspect or want not in self.watch_members():
            self.log(f"child {child.id!r}: node {want} is down, starting it on this node")
            return None
        return want

    def _backoff(self, child: Child) -> float:
        o = self._opts
        reset = o.period if o.reset_after is None else o.reset_after
        if child.started_at and self.now() - child.started_at >= reset:
            child.failures = 0  # it ran long enough: a fresh crash starts the series again
        child.started_at = 0.0
        delay = min(o.backoff_max, o.backoff_base * o.backoff_factor ** child.failures)
        child.failures += 1
        return float(delay * (1 + o.jitter * self._rng.uniform(-1.0, 1.0)))

    def _note_restart(self) -> bool:
        """Count a restart; False when more than ``intensity`` fell within ``period``."""
        now = time.monotonic()
        log = self._restart_log
        log.append(now)
        while log and log[0] < now - self._opts.period:
            log.popleft()
        return len(log) <= self._opts.intensity

    async def _name_released(self, child: Child) -> None:
        """Wait (up to ``name_wait``) until the previous instance's global name is gone.

        The old holder's name is dropped in the background after it retires
        (at once for a local end; at session expiry for a dead node), so a
        restart right away would fail with ``NameTaken``.
        """
        name, old = child.spec.name, child.last_handle
        if name is None or name.startswith(".") or old is None:
            return
        deadline = time.monotonic() + self._opts.name_wait
        while await self.query(name) == old and time.monotonic() < deadline:
            await self.sleep(_POLL * 5)

    async def _give_up(self, child: Child) -> None:
        self._giving_up = True
        self.log(f"child {child.id!r} ({child.last_exit or 'start failed'}): more than "
                 f"{self._opts.intensity} restarts in {self._opts.period}s; "
                 "stopping all children and exiting", level="error")
        await self._stop_all()
        self.exit()

    # -- stopping ------------------------------------------------------------------------

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            await self._end_child(child)
            child.state = "stopped"

    async def _end_child(self, child: Child) -> None:
        """Kill ``child`` and wait (up to its ``shutdown`` seconds) until it has ended.

        While running we see its ``on_down``; while starting or stopping no
        notice arrives, so a local child is watched in the node's service
        table and a remote one is not waited for (its kill is sent in order).
        """
        h = child.handle
        if h is None:
            return
        child.state = "stopping"
        self.kill(h)
        if not await self._ended(h, child.spec.shutdown):
            self.log(f"child {child.id!r} did not end within {child.spec.shutdown}s",
                     level="warning")
        if self._by_handle.get(h) is child:
            del self._by_handle[h]
            self.demonitor(h)
        child.handle, child.last_handle, child.state = None, h, "stopped"

    async def _ended(self, h: int, timeout: float) -> bool:
        """Whether the child ``h`` (killed just now) ended within ``timeout`` seconds."""
        if self._live:  # its on_down wakes us (it cannot come before: we are running)
            try:
                await self.wait((_ENDED, h), timeout=timeout)
            except CallTimeout:
                return False
            return True
        if node_of(h) != self._my_node:
            return True  # not observable here: the kill was sent, in order
        deadline = time.monotonic() + timeout
        while h in self._services:  # the node's table: a local child leaves it when it ends
            if time.monotonic() >= deadline:
                return False
            await self.sleep(_POLL)
        return True

    def _find(self, child_id: str) -> Child:
        for c in self._children:
            if c.id == child_id:
                return c
        raise KeyError(f"no child {child_id!r}")
