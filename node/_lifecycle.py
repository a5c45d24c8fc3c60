"""Services are born and retire here: spawn, started, retire, signals, the log.

:class:`Lifecycle` is the node-side half every service runtime talks to
(the ``core.host.Host`` protocol): replies go to the router, a start is
answered, an ending service is forgotten by every part that remembers it
(names, monitors, uniqueness, coordination, channels) through the
``on_retire`` hooks those parts registered.
"""

from __future__ import annotations

import importlib
import itertools
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .address import format_handle, make_handle
from .core.faults import code_of, error_payload
from .core.mailbox import Mailbox
from .core.servicecore import ServiceCore
from .message import ERR_START, ERROR, REPLY, SYSTEM

if TYPE_CHECKING:
    from ._router import Router
    from .core.timer import TimerThread

__all__ = ["LAUNCHABLE", "Lifecycle", "class_path", "resolve_class"]

LAUNCHABLE: set[str] = set()
"""``"module:Class"`` paths any node may ask this one to start (``node.launchable``)."""

Message = tuple[int, int, int, Any]


def class_path(cls: Any) -> str:
    """``"module:Qualname"`` of a class (a path string as is)."""
    return cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"


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


class Lifecycle:
    """Spawning and retiring services; implements ``core.host.Host``."""

    def __init__(
        self, router: Router, timer: TimerThread, call_timeout: float,
        base: type[ServiceCore], bind: Callable[[Any, int, Mailbox], None],
    ) -> None:
        self.router = router
        self.timer = timer
        self.call_timeout = call_timeout
        self.reply = router.reply
        self.count_drop = router.count_drop
        self.refused = router.refused
        self._base = base  # what a service class must derive from (node.service.Service)
        self._bind = bind  # gives a new service its node parts (node.node wires it)
        self._lock = threading.RLock()
        self._retired = threading.Condition(self._lock)
        self._local_ids = itertools.count(1)
        self._on_retire: list[Callable[[int, str], None]] = []
        self._allowed: set[str] = set()  # this node's config services, launchable remotely
        self.logger = 0  # the .logger's handle once started
        self.mailbox_limit = 0  # the node's default (config mailbox_limit); 0: unbounded
        self.running = False

    @property
    def node_id(self) -> int:
        """This node's id."""
        return self.router.node_id

    def on_retire(self, hook: Callable[[int, str], None]) -> None:
        """Call ``hook(handle, reason)`` for every service that ends (on its last turn)."""
        self._on_retire.append(hook)

    def allow(self, cls: Any) -> None:
        """Let other nodes start ``cls`` here (a config ``services`` entry does this)."""
        self._allowed.add(class_path(cls))

    def may_launch(self, path: str) -> bool:
        """True if another node may ask this one to start ``path``: registered with
        ``@launchable`` (its module already imported here) or allowed by config.
        Checked before anything is imported: a message never chooses code."""
        return path in LAUNCHABLE or path in self._allowed

    # -- birth -----------------------------------------------------------------------------

    def spawn(
        self, cls: Any, args: tuple[Any, ...], reply_to: int, session: int,
        name_check: Callable[[ServiceCore], None] | None = None,
    ) -> None:
        """Create a service of ``cls``, run its ``on_start(*args)`` on a worker, then
        answer ``reply_to`` on ``session`` with its handle (or an ERROR).

        ``name_check`` runs once the service is in the table and before it
        starts (a node-local ``name=``); if it raises the service is dropped.
        """
        try:
            klass = resolve_class(cls)
            if not (isinstance(klass, type) and issubclass(klass, self._base)):
                raise TypeError(f"{cls!r} is not a Service subclass")
        except Exception as err:
            self.router.reply(0, reply_to, session, ERROR, error_payload(ERR_START, err))
            return
        handle = make_handle(self.node_id, next(self._local_ids))
        svc = klass.__new__(klass)
        limit = getattr(klass, "mailbox_limit", None)
        mailbox = Mailbox(None, self.router.scheduler.queue,
                          self.mailbox_limit if limit is None else limit)
        self._bind(svc, handle, mailbox)
        try:
            klass.__init__(svc)
        except Exception as err:
            self.router.reply(0, reply_to, session, ERROR, error_payload(ERR_START, err))
            return
        with self._lock:
            self.router.services[handle] = svc
        if name_check is not None:
            try:
                name_check(svc)
            except Exception as err:
                with self._lock:
                    self.router.services.pop(handle, None)
                self.router.reply(0, reply_to, session, ERROR, error_payload(code_of(err), err))
                return
        self.router.post(handle, (reply_to, session, SYSTEM, ("start", args)))

    def started(self, svc: ServiceCore, source: int, session: int) -> None:
        """``on_start`` finished: the creator gets the handle."""
        self.router.reply(svc.handle, source, session, REPLY, svc.handle)

    def requeue(self, svc: ServiceCore, msgs: list[Message]) -> None:
        """Held messages back at the head of ``svc``'s mailbox."""
        self.router.requeue(svc, msgs)

    # -- end -----------------------------------------------------------------------------

    def retire(self, svc: ServiceCore, reason: str) -> None:
        """Forget a service that ended; every part's ``on_retire`` hook runs."""
        h = svc.handle
        with self._lock:
            self.router.services.pop(h, None)
            self._retired.notify_all()
        for hook in self._on_retire:
            hook(h, reason)

    def signal(self, handle: int, event: str) -> bool:
        """``kill`` or ``stop`` a local service at its next message boundary."""
        return self.router.signal(handle, event)

    def stop_services(self, handles: list[int], deadline: float) -> None:
        """Ask ``handles`` to stop; wait until they are gone or ``deadline`` passes."""
        for h in handles:
            self.signal(h, "stop")
        services = self.router.services
        with self._retired:
            while any(h in services for h in handles):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._retired.wait(min(left, 0.1))

    # -- the log -------------------------------------------------------------------------

    def log(self, handle: int, level: str, text: str) -> None:
        """One line to ``.logger`` (or stderr before it runs and after it stopped)."""
        if not self.running or self.logger not in self.router.services:
            sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} node={self.node_id} "
                             f"{format_handle(handle)} {level.upper()} {text}\n")
            return
        record = (time.time(), handle, level, text)
        # A SYSTEM event, not a handler: no message from another node can reach it.
        self.router.post(self.logger, (handle, 0, SYSTEM, ("log", record)))

    def log_exc(self, handle: int, what: str, err: BaseException) -> None:
        """An error line with the traceback of ``err``."""
        tb = "".join(traceback.format_exception(err)).rstrip()
        self.log(handle, "error", f"{what}: {type(err).__name__}: {err}\n{tb}")
