"""Where messages go: handles, names, monitors and unique services.

Mixed into ``Node``. Every method may be called from any worker; shared
tables are guarded by the node's ``_lock`` except ``_services``, which is
read without it (dict reads are atomic; writes take the lock).
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

from .address import Group, format_handle, node_of
from .errors import (
    CallError,
    CallTimeout,
    NodeDown,
    ServiceExited,
    ServiceNotFound,
    ServiceStartError,
)
from .message import (
    CALL,
    ERR_EXITED,
    ERR_HANDLER,
    ERR_NO_HANDLER,
    ERR_NODE_DOWN,
    ERR_NOT_FOUND,
    ERR_OTHER,
    ERR_START,
    ERR_TIMEOUT,
    REPLY,
    SEND,
    SYSTEM,
)

if TYPE_CHECKING:
    import threading
    from collections import Counter
    from collections.abc import Callable

    from coord.api import Coordinator

    from .scheduler import Scheduler
    from .service import Service


def resolve_class(cls: Any) -> Any:
    """A class, or the class named by ``"package.module:Class"``."""
    if not isinstance(cls, str):
        return cls
    module, sep, attr = cls.partition(":")
    if not sep:
        raise ValueError(f"service class {cls!r} must look like 'module:Class'")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _known_errors() -> dict[str, type[BaseException]]:
    from coord import errors as coord_errors

    from . import errors as node_errors

    table: dict[str, type[BaseException]] = {}
    for mod in (node_errors, coord_errors):
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                table[name] = obj
    return table


def code_of(err: BaseException) -> int:
    """The ERROR code that carries ``err`` to a caller as the same type."""
    return ERR_OTHER if type(err).__name__ in _known_errors() else ERR_HANDLER


class Routing:
    """Message routing half of ``Node``."""

    node_id: int
    _lock: threading.RLock
    _services: dict[int, Service]
    _ext_handle: int
    _ext_waiters: dict[int, Callable[[int, Any], None]]
    _drops: Counter[str]
    _scheduler: Scheduler
    _logger: int
    _running: bool
    coord: Coordinator

    def _init_routing(self) -> None:
        self._local_names: dict[str, int] = {}
        self._names_of: dict[int, set[str]] = {}
        self._name_waiters: dict[str, list[tuple[int, int]]] = {}
        self._watchers: dict[int, set[int]] = {}  # watched handle -> watchers
        self._unique: dict[str, int | list[tuple[int, int]]] = {}
        self._error_types = _known_errors()

    # -- delivery ------------------------------------------------------------------------

    def _send(
        self, source: int, dest: Any, session: int, kind: int, payload: Any, wake: bool = False
    ) -> None:
        """Deliver a SEND or CALL. A CALL to nowhere raises; a SEND to nowhere is counted."""
        if dest.__class__ is not int:
            dest = self._resolve(dest, kind == CALL)
            if dest is None:
                self._count_drop("no-destination")
                return
        svc = self._services.get(dest)
        if svc is not None:
            if svc._mailbox.push((source, session, kind, payload)) and wake:
                self._scheduler.wake()
            return
        if node_of(dest) != self.node_id:
            self._remote_send(dest, (source, session, kind, payload))
            return
        if kind == CALL:
            raise ServiceNotFound(f"no service {format_handle(dest)}")
        self._count_drop("dead-service")

    def _reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        """Deliver a REPLY or ERROR (from a worker; no wake-up needed)."""
        svc = self._services.get(dest)
        if svc is not None:
            svc._mailbox.push((source, session, kind, payload))
        else:
            self._push_slow(dest, (source, session, kind, payload), True)

    def _push_ext(self, dest: int, msg: tuple[int, int, int, Any]) -> None:
        """Deliver from outside the workers (timer, coord, harbor, plain threads)."""
        svc = self._services.get(dest)
        if svc is not None:
            if svc._mailbox.push(msg):
                self._scheduler.wake()
        else:
            self._push_slow(dest, msg, False)

    def _push_slow(self, dest: int, msg: tuple[int, int, int, Any], count: bool) -> None:
        if node_of(dest) != self.node_id:
            self._remote_reply(msg[0], dest, msg[1], msg[2], msg[3])
        elif dest == self._ext_handle:
            waiter = self._ext_waiters.get(msg[1])
            if waiter is not None:
                waiter(msg[2], msg[3])
                return
            self._count_drop("late-reply")
        elif count:
            self._count_drop("dead-service" if msg[2] != REPLY else "late-reply")

    def _resolve(self, dest: Any, strict: bool) -> int | None:
        if isinstance(dest, str):
            found = self._lookup(dest)
            if found is None and strict:
                raise ServiceNotFound(f"no service named {dest!r}")
            return found
        if isinstance(dest, Group):
            member = self.coord.pick(dest.name, dest.key)
            if member is None and strict:
                raise ServiceNotFound(f"group {dest.name!r} has no members")
            return member
        raise TypeError(f"not a destination: {dest!r}")

    def _resolve_local(self, dest: Any) -> int:
        if dest.__class__ is int:
            return int(dest)
        found = self._resolve(dest, True)
        assert found is not None
        return found

    # -- names -------------------------------------------------------------------------------

    def _lookup(self, name: str) -> int | None:
        if name.startswith("."):
            return self._local_names.get(name)
        return self.coord.query_name(name)

    def _register_now(self, svc: Service, name: str) -> None:
        from coord.errors import NameTaken

        if not name.startswith("."):
            raise ValueError(f"name= at spawn takes a local '.name'; use register() for {name!r}")
        with self._lock:
            holder = self._local_names.get(name)
            if holder is not None and holder != svc.handle and holder in self._services:
                raise NameTaken(f"{name!r} is held by {format_handle(holder)}")
            self._local_names[name] = svc.handle
            self._names_of.setdefault(svc.handle, set()).add(name)
            waiters = self._name_waiters.pop(name, [])
        for handle, session in waiters:
            self._reply(svc.handle, handle, session, REPLY, svc.handle)

    async def _register(self, svc: Service, name: str) -> None:
        if name.startswith("."):
            self._register_now(svc, name)
        else:
            await self._register_global(svc, name)  # type: ignore[attr-defined]

    async def _unregister(self, svc: Service, name: str) -> None:
        if not name.startswith("."):
            await self._unregister_global(svc, name)  # type: ignore[attr-defined]
            return
        with self._lock:
            if self._local_names.get(name) == svc.handle:
                del self._local_names[name]
            self._names_of.get(svc.handle, set()).discard(name)

    def _wait_name(self, name: str, handle: int, session: int) -> None:
        with self._lock:
            self._name_waiters.setdefault(name, []).append((handle, session))

    def _unwait_name(self, name: str, handle: int, session: int) -> None:
        with self._lock:
            waiters = self._name_waiters.get(name)
            if waiters and (handle, session) in waiters:
                waiters.remove((handle, session))

    # -- monitors and uniqueness ------------------------------------------------------------------

    def _monitor(self, watcher: int, target: int) -> None:
        if node_of(target) != self.node_id:
            self._remote_control(watcher, target, "monitor")
            return
        with self._lock:
            if target in self._services:
                self._watchers.setdefault(target, set()).add(watcher)
                return
        self._push_ext(watcher, (target, 0, SYSTEM, ("down", (target, "noproc"))))

    def _demonitor(self, watcher: int, target: int) -> None:
        if node_of(target) != self.node_id:
            self._remote_control(watcher, target, "demonitor")
            return
        with self._lock:
            self._watchers.get(target, set()).discard(watcher)

    def _forget(self, handle: int) -> set[int]:
        """Drop every table entry of an ended service; return its watchers. Under _lock."""
        for name in self._names_of.pop(handle, ()):
            if self._local_names.get(name) == handle:
                del self._local_names[name]
        for key, value in list(self._unique.items()):
            if value == handle:
                del self._unique[key]
        return self._watchers.pop(handle, set())

    def _unique_service(self, cls: Any, args: tuple[Any, ...], reply_to: int, session: int) -> None:
        key = cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"
        with self._lock:
            current = self._unique.get(key)
            if isinstance(current, int):
                self._reply(0, reply_to, session, REPLY, current)
                return
            if current is not None:
                current.append((reply_to, session))
                return
            self._unique[key] = [(reply_to, session)]
            s = self._new_ext_session(lambda kind, payload: self._unique_done(key, kind, payload))
        self._spawn(cls, args, None, self._ext_handle, s)

    def _unique_done(self, key: str, kind: int, payload: Any) -> None:
        with self._lock:
            waiters = self._unique.pop(key, [])
            if kind == REPLY:
                self._unique[key] = payload
        assert isinstance(waiters, list)
        for reply_to, session in waiters:
            self._reply(0, reply_to, session, kind, payload)

    def _new_ext_session(self, callback: Callable[[int, Any], None]) -> int:
        s: int = next(self._ext_sessions)  # type: ignore[attr-defined]

        def once(kind: int, payload: Any) -> None:
            self._ext_waiters.pop(s, None)
            callback(kind, payload)

        self._ext_waiters[s] = once
        return s

    # -- errors and logging -----------------------------------------------------------------------

    def _exception_from(self, payload: Any) -> BaseException:
        code, type_name, message, tb = payload
        if code == ERR_EXITED:
            return ServiceExited(message)
        if code == ERR_NOT_FOUND:
            return ServiceNotFound(message)
        if code == ERR_NODE_DOWN:
            return NodeDown(message)
        if code == ERR_TIMEOUT:
            return CallTimeout(message)
        if code == ERR_START:
            return ServiceStartError(type_name, message, tb)
        if code == ERR_OTHER:
            cls = self._error_types.get(type_name)
            if cls is not None:
                return cls(message)
        assert code in (ERR_HANDLER, ERR_NO_HANDLER, ERR_OTHER)
        return CallError(type_name, message, tb)

    def _log(self, handle: int, level: str, text: str) -> None:
        logger = self._services.get(self._logger)
        if logger is None or not self._running:
            sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} node={self.node_id} "
                             f"{format_handle(handle)} {level.upper()} {text}\n")
            return
        record = (time.time(), handle, level, text)
        self._push_ext(self._logger, (handle, 0, SEND, ("write", record)))

    def _log_exc(self, handle: int, what: str, err: BaseException) -> None:
        tb = "".join(traceback.format_exception(err)).rstrip()
        self._log(handle, "error", f"{what}: {type(err).__name__}: {err}\n{tb}")

    if TYPE_CHECKING:

        def _count_drop(self, reason: str) -> None: ...

        def _spawn(
            self, cls: Any, args: tuple[Any, ...], name: str | None, reply_to: int, session: int
        ) -> None: ...

        def _remote_send(self, dest: int, msg: tuple[int, int, int, Any]) -> None: ...

        def _remote_reply(
            self, source: int, dest: int, session: Any, kind: int, payload: Any
        ) -> None: ...

        def _remote_control(self, source: int, target: int, event: str) -> None: ...
