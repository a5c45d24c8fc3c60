"""A node: one process's services, scheduler and threads.

``Node`` is both the runtime the services talk to (the underscored methods,
called from workers) and the embedding API for plain threads (``newservice``,
``call``, ``send``, ``kill``, ``interrupt``, ``stats``, ``stop``), which block
their calling thread and never a worker.
"""

from __future__ import annotations

import ctypes
import itertools
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from . import _cluster, _remote, _routing
from ._runner import STATE_NAMES
from .address import format_handle, make_handle, node_of
from .errors import CallTimeout, Interrupted
from .mailbox import Mailbox
from .message import CALL, ERR_START, ERROR, REPLY, SEND, SYSTEM
from .monitor import MonitorThread
from .scheduler import Scheduler
from .timer import TimerThread

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from coord.api import Coordinator

    from .address import Dest
    from .config import NodeConfig
    from .service import Service

__all__ = ["Node"]


class _Box:
    """A one-shot result for a plain thread blocked on the node."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: tuple[int, Any] = (REPLY, None)

    def set(self, kind: int, payload: Any) -> None:
        self.result = (kind, payload)
        self.event.set()


class Node(_routing.Routing, _cluster.Cluster, _remote.Remote):
    """A running node. Use as a context manager, or call :meth:`stop`.

    Example::

        with Node.standalone(workers=2) as node:
            h = node.newservice(Echo)
            assert node.call(h, "echo", "hi") == "hi"
    """

    def __init__(
        self,
        node_id: int = 1,
        workers: int = 2,
        *,
        call_timeout: float = 10.0,
        monitor_threshold: float = 5.0,
        log_file: str | None = None,
        log_level: str = "info",
        profile: bool = True,
        cluster: str = "standalone",
        zk_hosts: str | None = None,
        redis_url: str | None = None,
        session_timeout: float = 10.0,
        coordinator: Coordinator | None = None,
        bind: str = "127.0.0.1",
        advertise: str | None = None,
        pull_port: int = 0,
        pub_port: int = 0,
        console_port: int | None = None,
        console_token: str | None = None,
        console_bind: str = "127.0.0.1",
        weights: tuple[int, ...] | None = None,
        coord_options: dict[str, Any] | None = None,
    ) -> None:
        import coord

        self.node_id = node_id
        self.incarnation = time.time_ns()
        self.call_timeout = call_timeout
        self.started_at = time.monotonic()
        self.profile = profile
        self._lock = threading.RLock()
        self._services: dict[int, Service] = {}
        self._local_ids = itertools.count(1)
        self._ext_handle = make_handle(node_id, 0)
        self._ext_sessions = itertools.count(1)
        self._ext_waiters: dict[int, Callable[[int, Any], None]] = {}
        self._drops: Counter[str] = Counter()
        self._retired = threading.Condition(self._lock)
        self._builtin: set[int] = set()
        self._logger = 0
        self._log_file = log_file
        self._log_level = log_level
        self._init_routing()
        self._init_cluster(
            coordinator
            or coord.connect(zk_hosts, redis_url, cluster, session_timeout, **(coord_options or {}))
        )
        self._requested_id: int | None = node_id
        self._clustered = zk_hosts is not None or (
            coordinator is not None and type(coordinator).__name__ != "EmbeddedCoordinator"
        )
        self._init_remote(bind, advertise, (pull_port, pub_port))
        self._console = (console_port, console_token, console_bind)
        self._scheduler = Scheduler(
            workers, self._on_stray, self._on_overload, profile=profile, weights=weights
        )
        self._worker_threads: set[threading.Thread] = set()
        self._timer = TimerThread(self._fire_timer, self._scheduler.wake_if_idle_work)
        self._monitor_thread = MonitorThread(
            self._scheduler.workers, self._report_stuck, monitor_threshold
        )
        self._running = False
        # Extra threads owned by the node (socket thread, harbor, console), stopped
        # in reverse order after every service has stopped.
        self._components: list[Any] = []

    def add_component(self, component: Any) -> None:
        """Register an object whose ``stop()`` the node calls after its services stopped."""
        self._components.append(component)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def standalone(cls, workers: int = 2, **kwargs: Any) -> Node:
        """Start a node in-process with the embedded coordination backend."""
        node = cls(workers=workers, **kwargs)
        node.start()
        return node

    @classmethod
    def from_config(cls, source: str | dict[str, Any] | NodeConfig) -> Node:
        """Start a node from a TOML path, a dict or a ``NodeConfig`` (env overrides apply).

        Raises ``ConfigError`` for a bad configuration.
        """
        from .config import NodeConfig, load_config

        cfg = source if isinstance(source, NodeConfig) else load_config(source)
        node = cls(
            node_id=cfg.node_id or 0,
            workers=cfg.workers,
            cluster=cfg.cluster,
            zk_hosts=cfg.zk_hosts,
            redis_url=cfg.redis_url,
            session_timeout=cfg.session_timeout,
            bind=cfg.bind,
            advertise=cfg.advertise,
            pull_port=cfg.pull_port,
            pub_port=cfg.pub_port,
            console_port=cfg.console_port,
            console_token=cfg.console_token,
            console_bind=cfg.console_bind,
            weights=cfg.weights,
            coord_options=cfg.coord_options(),
            call_timeout=cfg.call_timeout,
            monitor_threshold=cfg.monitor_threshold,
            log_file=cfg.log_file,
            log_level=cfg.log_level,
        )
        node.start()
        try:
            for spec in cfg.services:
                node.newservice(spec.cls, *spec.args, name=spec.name)
        except BaseException:
            node.stop()
            raise
        return node

    def start(self) -> None:
        """Start the threads and the built-in services."""
        import os
        import socket

        from .launcher import Launcher
        from .logger import Logger

        try:
            info = self.coord.start(
                self._requested_id or None, socket.gethostname(), os.getpid(), self._endpoints()
            )
        except BaseException:
            self.coord.stop()  # its threads must not outlive a node that never started
            raise
        self.node_id = info.node_id
        self.incarnation = info.incarnation
        self._ext_handle = make_handle(self.node_id, 0)
        if self._clustered:
            self._start_harbor()
        self._running = True
        self._scheduler.start()
        self._worker_threads = {w.thread for w in self._scheduler.workers if w.thread}
        self._timer.start()
        self._monitor_thread.start()
        self._logger = self.newservice(Logger, self._log_file, self._log_level, name=".logger")
        self._builtin.add(self._logger)
        self._builtin.add(self.newservice(Launcher, name=".launcher"))
        port, token, bind = self._console
        if port is not None:
            from .console import start_console

            self._builtin.add(start_console(self, port, token, host=bind))

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Run every service's ``on_stop`` (user services first, ``.logger`` last), then
        join every thread. Idempotent."""
        if not self._running:
            return
        deadline = time.monotonic() + timeout
        users = [h for h in list(self._services) if h not in self._builtin]
        self._stop_services(users, deadline)
        others = [h for h in list(self._services) if h != self._logger]
        self._stop_services(others, deadline)
        self._stop_services([self._logger], deadline)
        self.coord.stop()
        self._running = False
        for component in reversed(self._components):
            component.stop()
        self._monitor_thread.stop()
        self._timer.stop()
        self._scheduler.stop()

    def _endpoints(self) -> dict[str, str]:
        """Addresses this node advertises in membership (harbor sockets, console)."""
        endpoints = self._harbor_endpoints(self._clustered)
        port, _, bind = self._console
        if port:
            host = self._advertise if bind in ("0.0.0.0", "::") else bind
            endpoints["console"] = f"{host}:{port}"
        return endpoints

    def _stop_services(self, handles: list[int], deadline: float) -> None:
        for h in handles:
            self._signal(h, "stop")
        with self._retired:
            while any(h in self._services for h in handles):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._retired.wait(min(left, 0.1))

    # -- the embedding API (plain threads) ------------------------------------------------------

    def newservice(
        self,
        cls: type[Service] | str,
        *args: Any,
        name: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """Start a service and return its handle once ``on_start`` finished.

        Raises ``ServiceStartError`` if ``on_start`` raised, ``NameTaken`` if
        ``name`` is held, ``CallTimeout`` after ``timeout`` seconds.
        """
        handle: int = self._blocking(
            lambda s: self._spawn(cls, args, name, self._ext_handle, s), timeout
        )
        return handle

    def call(self, dest: Dest, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call a service from a plain thread; same errors as ``Service.call``."""
        t = self.call_timeout if timeout is None else timeout
        return self._blocking(
            lambda s: self._send(self._ext_handle, dest, s, CALL, (method, args), wake=True),
            t or None,
        )

    def send(self, dest: Dest, method: str, *args: Any) -> None:
        """Send a one-way message from a plain thread."""
        self._send(self._ext_handle, dest, 0, SEND, (method, args), wake=True)

    def kill(self, dest: Dest) -> bool:
        """End a service (on any node) at its next message boundary; False if it does
        not exist here (a remote kill is sent and True is returned)."""
        target = self._resolve_local(dest)
        if node_of(target) != self.node_id:
            self._remote_control(0, target, "kill")
            return True
        return self._signal(target, "kill")

    def interrupt(self, dest: Dest) -> bool:
        """Raise ``Interrupted`` inside the handler ``dest`` is running now.

        Returns False when the service is not running a handler. The handler
        (and a call waiting on it) sees ``Interrupted``; the service keeps serving.
        """
        handle = self._resolve_local(dest)
        for w in self._scheduler.workers:
            svc, msg, t = w.service, w.message, w.thread
            if svc is not None and msg is not None and svc.handle == handle and t is not None:
                if w.message is not msg or t.ident is None:
                    return False
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(t.ident), ctypes.py_object(Interrupted)
                )
                return True
        return False

    def services(self) -> list[dict[str, Any]]:
        """One dict per live service: handle, class, state, stats."""
        out = []
        for h, svc in list(self._services.items()):
            out.append({
                "handle": h,
                "address": format_handle(h),
                "class": type(svc).__name__,
                "state": STATE_NAMES[svc._state],
                "messages": svc._n_msgs,
                "mailbox": len(svc._mailbox.queue),
                "cpu": round(svc._cpu, 6),
                "pending_calls": len(svc._suspended),
            })
        return out

    def stats(self) -> dict[str, Any]:
        """Node-wide figures: services, drops by reason, workers, timers, monitor reports."""
        return {
            "node": self.node_id,
            "services": len(self._services),
            "drops": dict(self._drops),
            "workers": len(self._scheduler.workers),
            "sleeping": self._scheduler.sleeping,
            "wakeups": self._scheduler.wakeups,
            "tick_wakeups": self._scheduler.tick_wakeups,
            "global_queue": len(self._scheduler.queue),
            "timers": self._timer.pending(),
            "stuck_reports": self._monitor_thread.reports,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "harbor": self._transport.stats() if self._transport is not None else {},
        }

    def _blocking(self, start: Callable[[int], None], timeout: float | None) -> Any:
        if threading.current_thread() in self._worker_threads:
            raise RuntimeError("blocking Node API called from a worker; use the Service API")
        s = next(self._ext_sessions)
        box = _Box()
        self._ext_waiters[s] = box.set
        try:
            start(s)
            if not box.event.wait(timeout):
                raise CallTimeout(f"no reply within {timeout}s")
        finally:
            self._ext_waiters.pop(s, None)
        kind, payload = box.result
        if kind == REPLY:
            return payload
        raise self._exception_from(payload)

    # -- service lifecycle (called from workers) ---------------------------------------------

    def _spawn(
        self, cls: type[Service] | str, args: tuple[Any, ...], name: str | None,
        reply_to: int, session: int,
    ) -> None:
        from .service import Service

        try:
            klass = _routing.resolve_class(cls)
            if not (isinstance(klass, type) and issubclass(klass, Service)):
                raise TypeError(f"{cls!r} is not a Service subclass")
        except Exception as err:
            self._reply_error(reply_to, session, ERR_START, err)
            return
        handle = make_handle(self.node_id, next(self._local_ids))
        svc = klass.__new__(klass)
        mailbox = Mailbox(svc, self._scheduler.queue)
        svc._bind(self, handle, mailbox)
        try:
            klass.__init__(svc)
        except Exception as err:
            self._reply_error(reply_to, session, ERR_START, err)
            return
        with self._lock:
            self._services[handle] = svc
        if name is not None:
            try:
                self._register_now(svc, name)
            except Exception as err:
                with self._lock:
                    self._services.pop(handle, None)
                self._reply_error(reply_to, session, _routing.code_of(err), err)
                return
        if mailbox.push((reply_to, session, SYSTEM, ("start", args))):
            self._scheduler.wake()

    def _service_started(self, svc: Service, reply_to: int, session: int) -> None:
        self._reply(svc.handle, reply_to, session, REPLY, svc.handle)

    def _retire(self, svc: Service, reason: str) -> None:
        """Forget a service that ended: names, monitors (down notices), uniqueness."""
        h = svc.handle
        with self._lock:
            self._services.pop(h, None)
            watchers = self._forget(h)
            self._retired.notify_all()
        self._forget_global(h)
        self._forget_remote(h)
        for watcher in watchers:
            self._push_ext(watcher, (h, 0, SYSTEM, ("down", (h, reason))))

    def _signal(self, handle: int, event: str) -> bool:
        svc = self._services.get(handle)
        if svc is None:
            return False
        if svc._mailbox.push_front([(0, 0, SYSTEM, (event, None))]):
            self._scheduler.wake()
        return True

    # -- threads' callbacks ------------------------------------------------------------------

    def _fire_timer(self, handle: int, session: int, payload: Any) -> None:
        from .message import TIMER

        self._push_ext(handle, (0, session, TIMER, payload))

    def _on_stray(self, exc: BaseException) -> None:
        self._count_drop("stray-" + type(exc).__name__)

    def _on_overload(self, svc: Any, length: int) -> None:
        self._log(svc.handle, "warning", f"mailbox overloaded: {length} messages")

    def _report_stuck(self, handle: int, text: str) -> None:
        self._log(handle, "warning", text)

    def _count_drop(self, reason: str) -> None:
        with self._lock:
            self._drops[reason] += 1

    def _reply_error(self, dest: int, session: int, code: int, err: BaseException) -> None:
        from ._runner import error_payload

        self._reply(0, dest, session, ERROR, error_payload(code, err))

    def iter_services(self) -> Iterator[Service]:
        """The live service objects (for built-in services and tests)."""
        return iter(list(self._services.values()))
