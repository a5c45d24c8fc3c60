"""A node: one process's services, scheduler and threads — the composition root.

``Node`` builds the parts (``core`` scheduler, timer and watchdog; the
router; lifecycle; names; monitors; unique services; the coordination and
harbor links; sockets), wires them to each other, and holds the node's
lifecycle and the embedding API for plain threads (``newservice``,
``call``, ``send``, ``kill``, ``interrupt``, ``services``, ``stats``,
``stop``), which block their calling thread and never a worker. Nothing in
``node`` below this module imports it.

Built-in services (``.logger``, ``.launcher``, the console) are started by
class path, as skynet's bootstrap starts its services by name: they sit
above this module and could be replaced.
"""

from __future__ import annotations

import ctypes
import gc
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import coord
from coord.api import Health

from ._coord_link import CoordLink
from ._harbor_link import HarborLink, HarborSettings, TransportFactory
from ._lifecycle import Lifecycle
from ._monitors import Monitors
from ._names import Names
from ._offload import Offload
from ._parts import Parts
from ._reload import Reloader, ReloadReport
from ._router import Router
from ._sockets.api import Sockets
from ._trust import check_exposure, load_credentials
from ._unique import Uniques
from .address import format_handle
from .config import is_loopback
from .core.faults import exception_from
from .core.scheduler import Scheduler
from .core.timer import TimerThread
from .core.watchdog import Watchdog
from .errors import CallTimeout, ConfigError, Interrupted
from .message import CALL, REPLY, SEND, SYSTEM, TIMER
from .service import Service

if TYPE_CHECKING:
    from types import TracebackType

    from coord.api import Coordinator, Held, NodeInfo

    from .address import Dest
    from .config import NodeConfig
    from .core.mailbox import Mailbox
    from .core.servicecore import ServiceCore

__all__ = ["Node", "TransportFactory"]

# Young-generation GC threshold a node sets at start (Python's default is 700): queued
# envelopes are live tracked tuples, so at 700 a flood of messages runs thousands of
# collections a second that each walk the queue (docs/design.md, "Garbage collection").
GC_THRESHOLD = 20_000
LOGGER = "node.builtins.logger:Logger"
LAUNCHER = "node.builtins.launcher:Launcher"
CONSOLE = "node.builtins.console:Console"
ADMIN = "node.builtins.admin:Admin"


class _Box:
    """A one-shot result for a plain thread blocked on the node."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.result: tuple[int, Any] = (REPLY, None)

    def set(self, kind: int, payload: Any) -> None:
        self.result = (kind, payload)
        self.event.set()


class Node:
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
        log_format: str = "text",
        profile: bool = True,
        cluster: str = "standalone",
        zk_hosts: str | None = None,
        redis_url: str | None = None,
        session_timeout: float = 10.0,
        coordinator: Coordinator | None = None,
        transport: TransportFactory | None = None,
        bind: str = "127.0.0.1",
        advertise: str | None = None,
        pull_port: int = 0,
        pub_port: int = 0,
        console_port: int | None = None,
        console_token: str | None = None,
        console_bind: str = "127.0.0.1",
        weights: tuple[int, ...] | None = None,
        offload_threads: int = 4,
        mailbox_limit: int = 0,
        send_tracebacks: bool = False,
        on_session_lost: str = "serve",
        coord_options: dict[str, Any] | None = None,
        keys_dir: str | None = None,
        insecure: bool = False,
        admin_port: int | None = None,
        admin_bind: str = "127.0.0.1",
        tracing: bool = False,
        tracer_provider: Any = None,
        harbor_peer_timeout: float = 1.0,
        gc_threshold: int = GC_THRESHOLD,
    ) -> None:
        self.node_id = node_id
        self.incarnation = time.time_ns()
        self.call_timeout = call_timeout
        self._gc_threshold = gc_threshold
        self.started_at = time.monotonic()
        self.profile = profile
        self._requested_id: int | None = node_id
        self._log_args = (log_file, log_level, log_format)
        creds = load_credentials(keys_dir, node_id or None)
        if creds is not None and console_token is None:
            console_token = creds.console_token or None
        self._console = (console_port, console_token, console_bind)
        clustered = zk_hosts is not None or transport is not None or (
            coordinator is not None and coordinator.clustered
        )
        self._insecure_warning = check_exposure(
            clustered and transport is None, creds, insecure, (bind, advertise or bind)
        )
        self._console_host = advertise or bind
        if admin_port is not None and not is_loopback(admin_bind) and not console_token:
            raise ConfigError(
                f"admin_bind {admin_bind} is off loopback: set console_token (the admin "
                "endpoint then asks for 'Authorization: Bearer <token>')"
            )
        self._admin = (admin_port, admin_bind, console_token)
        # Tracing: None when off, and then nothing of node._tracing is on any path.
        self._tracing = None
        if tracing:
            from ._tracing import Tracing

            self._tracing = Tracing(tracer_provider)
        self.coord = coordinator or coord.connect(
            zk_hosts, redis_url, cluster, session_timeout, **(coord_options or {})
        )
        self._clustered = self.coord.clustered or transport is not None

        # The parts, bottom up: core, router, lifecycle, links, names, monitors, uniques.
        self._scheduler = Scheduler(
            workers, self._on_stray, self._on_overload, profile=profile, weights=weights
        )
        router = self._router = Router(node_id, self._scheduler)
        self._timer = TimerThread(self._fire_timer, self._scheduler.wake_if_idle_work)
        self._scheduler.on_awake = self._timer.poke
        self._watchdog = Watchdog(self._scheduler.workers, self._report_stuck, monitor_threshold)
        life = self._life = Lifecycle(router, self._timer, call_timeout, Service, self._bind)
        self._coord_link = CoordLink(self.coord, router)
        self._harbor = HarborLink(router, self._coord_link, HarborSettings(
            bind, advertise or bind, pull_port, pub_port, transport, creds,
            harbor_peer_timeout,
        ))
        self._names = Names(router, self._coord_link)
        self._monitors = Monitors(router, self._harbor)
        self._uniques = Uniques(router, life, self._coord_link, router.kill)
        router.wire(self._names.resolve, self._harbor)
        self._harbor.on_control(self._remote_control)
        for forget in (self._names.forget, self._coord_link.forget, self._harbor.forget,
                       self._uniques.forget):
            life.on_retire(_ignoring_reason(forget))
        life.on_retire(self._monitors.retired)
        # Extra threads owned by the node (socket thread, harbor), stopped in reverse
        # order after every service has stopped.
        self._components: list[Any] = []
        self._parts = Parts(
            router=router, lifecycle=life, names=self._names, monitors=self._monitors,
            uniques=self._uniques, coord=self._coord_link, harbor=self._harbor,
            sockets=Sockets(router, life, self.add_component), started_at=self.started_at,
            offload=Offload(router, offload_threads),
        )
        if on_session_lost not in ("serve", "isolate"):
            raise ValueError("on_session_lost is 'serve' or 'isolate'")
        self._isolate = on_session_lost == "isolate"
        self._coord_link.on_state(self._coord_state)
        life.mailbox_limit = mailbox_limit
        self._harbor.send_tracebacks = send_tracebacks
        router.on_refused = lambda dest, n: life.log(
            0, "warning", f"{format_handle(dest)} refused {n} message(s): mailbox full"
        )
        self._worker_threads: set[threading.Thread] = set()
        self._builtin: set[int] = set()
        self._running = False

    def add_component(self, component: Any) -> None:
        """Register an object whose ``stop()`` the node calls after its services stopped."""
        self._components.append(component)

    @classmethod
    def of(cls, svc: Service) -> Node:
        """The node ``svc`` runs on (for built-in services that manage their node)."""
        node = _NODES.get(svc._router)
        if node is None:
            raise RuntimeError(f"{svc!r} is not bound to a running node")
        return node

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
            node_id=cfg.node_id or 0, workers=cfg.workers, cluster=cfg.cluster,
            zk_hosts=cfg.zk_hosts, redis_url=cfg.redis_url,
            session_timeout=cfg.session_timeout, bind=cfg.bind, advertise=cfg.advertise,
            pull_port=cfg.pull_port, pub_port=cfg.pub_port, console_port=cfg.console_port,
            console_token=cfg.console_token, console_bind=cfg.console_bind,
            weights=cfg.weights, call_timeout=cfg.call_timeout,
            offload_threads=cfg.offload_threads, on_session_lost=cfg.on_session_lost,
            mailbox_limit=cfg.mailbox_limit, send_tracebacks=cfg.send_tracebacks,
            monitor_threshold=cfg.monitor_threshold, log_file=cfg.log_file,
            log_level=cfg.log_level, log_format=cfg.log_format, admin_port=cfg.admin_port,
            admin_bind=cfg.admin_bind, tracing=cfg.tracing,
            coord_options=cfg.coord_options(), keys_dir=cfg.keys_dir, insecure=cfg.insecure,
            harbor_peer_timeout=cfg.harbor_peer_timeout, gc_threshold=cfg.gc_threshold,
        )
        node.start()
        try:
            for spec in cfg.services:
                node.allow(spec.cls)
                node.newservice(spec.cls, *spec.args, name=spec.name)
        except BaseException:
            node.stop()
            raise
        return node

    def start(self) -> None:
        """Join coordination, start the harbor, the threads and the built-in services."""
        try:
            info = self.coord.start(
                self._requested_id or None, socket.gethostname(), os.getpid(), self._endpoints()
            )
        except BaseException:
            self.coord.stop()  # its threads must not outlive a node that never started
            self._harbor.close_listener()  # nor its bound harbor ports
            raise
        self.node_id = info.node_id
        self.incarnation = info.incarnation
        self._router.renumber(self.node_id)
        if self._clustered:
            warn = self._life.log
            harbor = self._harbor.start(self.incarnation, lambda t: warn(0, "warning", t))
            self.add_component(harbor)
        _NODES[self._router] = self
        self._running = self._life.running = True
        if self._gc_threshold:
            # Process-wide, like the worker threads a node owns: one node per process.
            gc.set_threshold(self._gc_threshold, *gc.get_threshold()[1:])
        self._scheduler.start()
        self._worker_threads = {w.thread for w in self._scheduler.workers if w.thread}
        self._timer.start()
        self._watchdog.start()
        self._life.logger = self.newservice(LOGGER, *self._log_args, name=".logger")
        self._builtin.add(self._life.logger)
        self._builtin.add(self.newservice(LAUNCHER, name=".launcher"))
        if self._insecure_warning:
            self._life.log(0, "warning", self._insecure_warning)
        port, token, bind = self._console
        if port is not None:
            self._builtin.add(self.newservice(CONSOLE, bind, port, token, name=".console"))
        admin_port, admin_bind, token = self._admin
        if admin_port is not None:
            self._builtin.add(
                self.newservice(ADMIN, admin_bind, admin_port, token, name=".admin")
            )

    def _endpoints(self) -> dict[str, str]:
        """Addresses this node advertises in membership (harbor sockets, console)."""
        endpoints = self._harbor.endpoints() if self._clustered else {}
        port, _, bind = self._console
        if port:
            host = self._console_host if bind in ("0.0.0.0", "::") else bind
            endpoints["console"] = f"{host}:{port}"
        port, bind, _ = self._admin
        if port:  # a fixed port only: 0 (any free port) is known after start
            host = self._console_host if bind in ("0.0.0.0", "::") else bind
            endpoints["admin"] = f"{host}:{port}"
        return endpoints

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
        services, logger = self._router.services, self._life.logger
        self._life.stop_services([h for h in list(services) if h not in self._builtin], deadline)
        self._life.stop_services([h for h in list(services) if h != logger], deadline)
        self._life.stop_services([logger], deadline)
        self.coord.stop()
        self._running = self._life.running = False
        for component in reversed(self._components):
            component.stop()
        self._parts.offload.stop()
        self._watchdog.stop()
        self._timer.stop()
        self._scheduler.stop()
        _NODES.pop(self._router, None)

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
        names = self._names
        check = None if name is None else (lambda svc: names.register_local(svc, name))
        ext = self._router.ext_handle
        handle: int = self._blocking(
            lambda s: self._life.spawn(cls, args, ext, s, check), timeout
        )
        return handle

    def call(self, dest: Dest, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call a service from a plain thread; same errors as ``Service.call``."""
        t = self.call_timeout if timeout is None else timeout
        ext = self._router.ext_handle
        tracing = self._tracing
        payload = (method, args) if tracing is None else tracing.payload(method, args)
        return self._blocking(
            lambda s: self._router.deliver(ext, dest, s, CALL, payload, wake=True),
            t or None,
        )

    def send(self, dest: Dest, method: str, *args: Any) -> None:
        """Send a one-way message from a plain thread (with tracing on, the thread's
        current span is the handler's parent, as for :meth:`call`)."""
        tracing = self._tracing
        payload = (method, args) if tracing is None else tracing.payload(method, args)
        self._router.deliver(self._router.ext_handle, dest, 0, SEND, payload, wake=True)

    def kill(self, dest: Dest) -> bool:
        """End a service (on any node) at its next message boundary; False if it does
        not exist here or its node cannot be reached (True once a remote kill is sent)."""
        return self._router.kill(self._names.handle_of(dest))

    def resolve(self, dest: Dest) -> int:
        """The handle a name or group stands for now (a handle as is).

        Raises ``ServiceNotFound``.
        """
        return self._names.handle_of(dest)

    def interrupt(self, dest: Dest) -> bool:
        """Raise ``Interrupted`` inside the handler ``dest`` is running now.

        Returns False when the service is not running a handler. The handler
        (and a call waiting on it) sees ``Interrupted``; the service keeps serving.
        """
        handle = self._names.handle_of(dest)
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
        """One dict per live service: handle, class, state, stats, local names."""
        out = []
        for h, svc in list(self._router.services.items()):
            out.append({
                "handle": h, "address": format_handle(h), "class": type(svc).__name__,
                **svc.runtime_stats(), "names": self._names.names_of(h),
            })
        return out

    def service(self, handle: int) -> ServiceCore | None:
        """The live local service object of ``handle`` (for built-ins and tests)."""
        return self._router.services.get(handle)

    def iter_services(self) -> list[ServiceCore]:
        """The live local service objects."""
        return list(self._router.services.values())

    def local_names(self) -> dict[str, int]:
        """Node-local ``.names`` and their holders."""
        return self._names.local_names()

    def held_locks(self) -> list[tuple[int, Held]]:
        """``(handle, held)`` for every cluster lock a local service holds now."""
        return self._coord_link.held_locks()

    def members(self) -> dict[int, NodeInfo]:
        """The cluster's live nodes (this one alone when standalone)."""
        return self.coord.members()

    @property
    def health(self) -> Health:
        """The coordination session's health as last reported."""
        return self._coord_link.health

    @property
    def master(self) -> tuple[int | None, int]:
        """``(master node id, epoch)`` as this node last saw them."""
        return self._coord_link.master_id, self._coord_link.master_epoch

    def allow(self, cls: type[Service] | str) -> None:
        """Let other nodes start ``cls`` here (as ``@launchable`` does for a class)."""
        self._life.allow(cls)

    def may_launch(self, path: str) -> bool:
        """True if another node may ask this one to start ``path``."""
        return self._life.may_launch(path)

    def reload_keys(self) -> bool:
        """Re-read ``keys_dir`` (a node key removed from ``public/`` cuts that node
        off). False without keys. Run on every node (console ``reload-keys``, SIGHUP)."""
        return self._harbor.reload_credentials()

    def host_unique(self, path: str) -> bool:
        """On the master: start the cluster-unique service ``path`` from its stored spec."""
        return self._uniques.host(path)

    def reload(self, module: str, timeout: float = 10.0) -> ReloadReport:
        """Live reload: import ``module`` again from its source and swap every local
        service whose class it defines to the new class of the same name, keeping
        instance state; each swap happens on that service's worker between two
        messages, then its ``on_reload(old_class)`` runs. Waits up to ``timeout``
        seconds for the swaps. An operator action (console, CLI); blocks the calling
        plain thread.

        Raises ``ReloadError`` when the new code fails to import (the old code keeps
        running) or the module may not be reloaded.
        """
        if threading.current_thread() in self._worker_threads:
            raise RuntimeError("Node.reload blocks: call it from a plain thread (offload)")
        return Reloader(self._router, self._life.log).reload(module, timeout)

    def sockets_stats(self) -> dict[str, int]:
        """The socket thread's counters (empty until a service used a socket)."""
        st = self._parts.sockets.started()
        return {} if st is None else dict(st.counts, sockets=st.count())

    def log(self, handle: int, level: str, text: str) -> None:
        """One line to the node's log as ``handle``."""
        self._life.log(handle, level, text)

    def stats(self) -> dict[str, Any]:
        """Node-wide figures: services, drops by reason, workers, timers, watchdog reports."""
        return {
            "node": self.node_id,
            "services": len(self._router.services),
            "drops": self._router.drops(),
            "workers": len(self._scheduler.workers),
            "sleeping": self._scheduler.sleeping,
            "wakeups": self._scheduler.wakeups,
            "tick_wakeups": self._scheduler.tick_wakeups,
            "global_queue": len(self._scheduler.queue),
            "timers": self._timer.pending(),
            "timer_turns": self._timer.turns,
            "stuck_reports": self._watchdog.reports,
            "uptime": round(time.monotonic() - self.started_at, 3),
            "harbor": self._harbor.stats(),
            "offload": self._parts.offload.stats(),
            "worker_busy": [round(w.busy, 6) for w in self._scheduler.workers],
            "coord": {"health": self._coord_link.health.value, **self._coord_link.lock_stats()},
            "tracing": None if self._tracing is None else {
                "bad_context": self._tracing.bad_context},
        }

    def call_latency(self) -> tuple[list[tuple[float, int]], float]:
        """Round trips of calls to other nodes: ``([(le seconds, cumulative count)], sum)``."""
        return self._harbor.call_latency.snapshot()

    @property
    def tracing(self) -> bool:
        """True when each handler run is a span (``tracing = true``)."""
        return self._tracing is not None

    def _blocking(self, start: Callable[[int], None], timeout: float | None) -> Any:
        if threading.current_thread() in self._worker_threads:
            raise RuntimeError("blocking Node API called from a worker; use the Service API")
        box = _Box()
        s = self._router.ext_session(box.set, once=False)
        try:
            start(s)
            if not box.event.wait(timeout):
                raise CallTimeout(f"no reply within {timeout}s")
        finally:
            self._router.forget_ext_session(s)
        kind, payload = box.result
        if kind == REPLY:
            return payload
        raise exception_from(payload)

    # -- wiring --------------------------------------------------------------------------

    def _bind(self, svc: Service, handle: int, mailbox: Mailbox) -> None:
        svc._bind(self._parts, handle, mailbox)
        if self._tracing is not None:
            self._tracing.instrument(svc)

    def _remote_control(self, event: str, source: int, target: int) -> None:
        """kill/monitor/demonitor sent by another node."""
        if event == "kill":
            self._router.kill(target)
        elif event == "monitor":
            self._monitors.monitor(source, target)
        elif event == "demonitor":
            self._monitors.demonitor(source, target)

    def _coord_state(self, state: str) -> None:
        """Coordination session changes: services that override ``on_coord`` are told;
        with ``on_session_lost = "isolate"`` the harbor refuses cluster traffic from
        the moment the session is in doubt (suspended, as the master steps down
        then) or lost, until it is connected again."""
        if self._isolate:
            self._harbor.isolate(state in ("suspended", "lost"))
        for svc in list(self._router.services.values()):
            if getattr(type(svc), "on_coord", None) is not Service.on_coord:
                self._router.post(svc.handle, (0, 0, SYSTEM, ("coord", (state,))))

    def _fire_timer(self, handle: int, session: int, payload: Any) -> None:
        self._router.post(handle, (0, session, TIMER, payload))

    def _on_stray(self, exc: BaseException) -> None:
        self._router.count_drop("stray-" + type(exc).__name__)

    def _on_overload(self, svc: Any, length: int) -> None:
        self._life.log(svc.handle, "warning", f"mailbox overloaded: {length} messages")

    def _report_stuck(self, handle: int, text: str) -> None:
        self._life.log(handle, "warning", text)


def _ignoring_reason(forget: Callable[[int], None]) -> Callable[[int, str], None]:
    return lambda handle, reason: forget(handle)


_NODES: dict[Router, Node] = {}
"""Running nodes by their router (what a bound service holds): ``Node.of``."""
