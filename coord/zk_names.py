"""Global names (``names/<name>``) and groups (``groups/<group>/<handle>``) in ZooKeeper.

Both are ephemeral znodes of this node's session. The component remembers
what this node registered, so that after a session expiry :meth:`restore`
can register it again (reporting names another node took meanwhile).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from coord._base import check_name
from coord._runtime import SerialWorker, Timer
from coord._zkutil import Items, WatchedDir, zk_errors
from coord.errors import NameNotFound, NameTaken

__all__ = ["ZkNames"]


def _handle(data: bytes | None) -> int | None:
    try:
        return int(data or b"")
    except ValueError:
        return None


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _noop() -> None:
    pass


class ZkNames:
    """Names and groups of one ZooKeeper coordinator."""

    def __init__(
        self,
        client: Any,
        root: str,
        worker: SerialWorker,
        emit: Callable[..., None],
        timer: Timer,
    ) -> None:
        self._client = client
        self._timer = timer
        self._names_path = f"{root}/names"
        self._groups_path = f"{root}/groups"
        self._worker = worker
        self._emit = emit
        self._cond = threading.Condition()
        self._names: dict[str, int] = {}
        self._groups: dict[str, WatchedDir] = {}
        # What this node registered: restored after a session expiry.
        self._mine: dict[str, int] = {}
        self._my_groups: set[tuple[str, int]] = set()
        self.names_dir = WatchedDir(
            client, self._names_path, worker, True, self._names_changed, timer
        )
        self.groups_dir = WatchedDir(
            client, self._groups_path, worker, False, self._groups_changed, timer
        )

    def refresh_all(self) -> None:
        """Re-read names and groups (on the worker)."""
        self.names_dir.refresh()
        self.groups_dir.refresh()
        for d in list(self._groups.values()):
            d.refresh()

    def _names_changed(self, _old: Items, new: Items) -> None:
        names = {n: h for n, d in new.items() if (h := _handle(d)) is not None}
        with self._cond:
            # A snapshot read before our own create may land after it: what this node
            # registered (and still owns) stays visible to its own lookups.
            for n, h in self._mine.items():
                names.setdefault(n, h)
            self._names = names
            self._cond.notify_all()

    def _groups_changed(self, _old: Items, new: Items) -> None:
        for group in new:
            if group not in self._groups:
                d = WatchedDir(
                    self._client,
                    f"{self._groups_path}/{group}",
                    self._worker,
                    False,
                    self._members_changed(group),
                    self._timer,
                )
                self._groups[group] = d
                d.refresh()
        for group in [g for g in self._groups if g not in new]:
            self._groups.pop(group).closed = True

    def _members_changed(self, group: str) -> Callable[[Items, Items], None]:
        def changed(old: Items, new: Items) -> None:
            joined = sorted(h for n in new if n not in old and (h := _int(n)) is not None)
            left = sorted(h for n in old if n not in new and (h := _int(n)) is not None)
            if joined or left:
                self._emit("on_group", group, joined, left)

        return changed

    # names

    def register(self, name: str, handle: int) -> None:
        """Create ``names/<name>``; ``NameTaken`` if another handle holds it."""
        check_name(name)
        path = f"{self._names_path}/{name}"
        with zk_errors(f"register_name({name!r})"):
            try:
                self._client.create(path, str(handle).encode(), ephemeral=True)
            except NodeExistsError:
                try:
                    data, _ = self._client.get(path)
                except NoNodeError:
                    return self.register(name, handle)  # it just went away
                held = _handle(data)
                if held != handle:
                    raise NameTaken(f"name {name!r} is held by {held!r}") from None
        with self._cond:
            self._mine[name] = handle
            self._names[name] = handle
            self._cond.notify_all()
        return None

    def unregister(self, name: str, handle: int, check: Callable[[], None] = _noop) -> None:
        """Delete ``names/<name>`` if it holds ``handle``.

        The name is forgotten (never restored after a session expiry) before
        ``check`` runs, so a failed call still does not resurrect it.
        """
        path = f"{self._names_path}/{name}"
        with self._cond:
            if self._mine.get(name) == handle:
                del self._mine[name]
        check()
        with zk_errors(f"unregister_name({name!r})"):
            try:
                data, stat = self._client.get(path)
                if _handle(data) == handle:
                    self._client.delete(path, version=stat.version)
            except NoNodeError:
                pass
        with self._cond:
            if self._names.get(name) == handle:
                del self._names[name]

    def unregister_handle(self, handle: int, check: Callable[[], None] = _noop) -> None:
        """Drop every name and group membership of ``handle`` (forgotten first)."""
        with self._cond:
            names = [n for n, h in {**self._names, **self._mine}.items() if h == handle]
            groups = {g for g, h in self._my_groups if h == handle}
            groups |= {g for g, d in self._groups.items() if str(handle) in d.items}
            for n in names:
                if self._mine.get(n) == handle:
                    del self._mine[n]
            self._my_groups -= {(g, handle) for g in groups}
        check()
        for name in names:
            self.unregister(name, handle)
        for group in groups:
            self.leave(group, handle)

    def query(self, name: str) -> int | None:
        """The cached handle of ``name``."""
        with self._cond:
            return self._names.get(name)

    def wait(self, name: str, timeout: float) -> int:
        """Block until ``name`` is in the cache; ``NameNotFound`` on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: name in self._names, timeout):
                raise NameNotFound(f"name {name!r} not registered within {timeout}s")
            return self._names[name]

    def names(self) -> dict[str, int]:
        """The cached names."""
        with self._cond:
            return dict(self._names)

    # groups

    def join(self, group: str, handle: int) -> None:
        """Create ``groups/<group>/<handle>`` (ephemeral)."""
        check_name(group)
        with zk_errors(f"join_group({group!r})"), contextlib.suppress(NodeExistsError):
            self._client.create(
                f"{self._groups_path}/{group}/{handle}", ephemeral=True, makepath=True
            )
        with self._cond:
            self._my_groups.add((group, handle))
        self._post_group_refresh(group)

    def leave(self, group: str, handle: int, check: Callable[[], None] = _noop) -> None:
        """Delete ``groups/<group>/<handle>`` (forgotten first, like :meth:`unregister`)."""
        with self._cond:
            self._my_groups.discard((group, handle))
        check()
        with zk_errors(f"leave_group({group!r})"), contextlib.suppress(NoNodeError):
            self._client.delete(f"{self._groups_path}/{group}/{handle}")
        self._post_group_refresh(group)

    def _post_group_refresh(self, group: str) -> None:
        d = self._groups.get(group)
        if d is not None:
            d.post_refresh()
        else:
            self.groups_dir.post_refresh()

    def members(self, group: str) -> list[int]:
        """Cached sorted members of ``group``."""
        d = self._groups.get(group)
        return sorted(int(h) for h in d.items) if d is not None else []

    def groups(self) -> dict[str, list[int]]:
        """Every cached non-empty group."""
        out = {g: sorted(int(h) for h in d.items) for g, d in list(self._groups.items())}
        return {g: m for g, m in out.items() if m}

    # session expiry

    def restore(self) -> None:
        """Register again what this node owned (on the worker, new session)."""
        with self._cond:
            mine = dict(self._mine)
            groups = set(self._my_groups)
        for name, handle in mine.items():
            try:
                self.register(name, handle)
            except NameTaken:
                with self._cond:
                    self._mine.pop(name, None)
                self._emit("on_name_lost", name, handle)
        for group, handle in groups:
            self.join(group, handle)
