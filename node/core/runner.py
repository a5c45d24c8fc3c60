"""Dispatching messages to a service and resuming its coroutines.

This is the only code that runs handlers and resumes service coroutines.
A service is run by one worker at a time (the mailbox's ``in_global``
invariant), so every field here is owned by "the worker currently running
this service" and needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import CallTimeout
from ..message import (
    CALL,
    CALL_TIMEOUT,
    ERR_EXITED,
    ERR_HANDLER,
    ERR_NO_HANDLER,
    ERR_START,
    ERROR,
    REPLY,
    SOCKET,
    SYSTEM,
    TIMER,
)
from .faults import error_payload, exception_from

if TYPE_CHECKING:
    from .mailbox import Mailbox
    from .timer import TimerEntry, TimerThread

STARTING, RUNNING, STOPPING, EXITED = range(4)
STATE_NAMES = ("starting", "running", "stopping", "exited")

# Task kinds: what finishing the coroutine means.
T_HANDLER, T_START, T_STOP, T_OTHER = range(4)

# TIMER payload of a ``timeout(seconds, fn)`` callback.
CALLBACK = "callback"

# SYSTEM event: swap to the class of the same name in a reloaded module (node._reload).
RELOAD = "reload"


class Host(Protocol):
    """What a service's runtime half calls on its node."""

    @property
    def node_id(self) -> int:
        """This node's id."""

    call_timeout: float
    timer: TimerThread

    def reply(self, source: int, dest: int, session: int, kind: int, payload: Any) -> None:
        """Deliver a REPLY or ERROR (from the worker running ``source``)."""

    def requeue(self, svc: ServiceCore, msgs: list[tuple[int, int, int, Any]]) -> None:
        """Put ``msgs`` back at the head of ``svc``'s own mailbox."""

    def count_drop(self, reason: str) -> None:
        """Count a message dropped for ``reason``."""

    def log(self, handle: int, level: str, text: str) -> None:
        """One log line from ``handle``."""

    def log_exc(self, handle: int, what: str, err: BaseException) -> None:
        """An error line with the traceback of ``err``."""

    def started(self, svc: ServiceCore, source: int, session: int) -> None:
        """``svc``'s ``on_start`` finished: answer its creator."""

    def retire(self, svc: ServiceCore, reason: str) -> None:
        """``svc`` ended: forget its names, monitors, subscriptions; tell its watchers."""


class ServiceExit(BaseException):
    """Raised by ``Service.exit()`` to unwind the running handler. Never escapes a worker."""


class _Done:
    """Stands in for the coroutine of a plain handler that called exit()."""

    def close(self) -> None:
        pass


_DONE: Any = _Done()


class Task:
    """A service coroutine and whom to answer when it finishes."""

    __slots__ = ("coro", "kind", "method", "session", "source")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], source: int, session: int, kind: int, method: str
    ) -> None:
        self.coro = coro
        self.source = source
        self.session = session
        self.kind = kind
        self.method = method


class ServiceCore:
    """The runtime half of a service: state, dispatch and coroutine resumption."""

    # Built by Service.__init_subclass__: exposed method name -> (function, is_coroutine).
    _handlers: dict[str, tuple[Callable[..., Any], bool]] = {}

    handle: int
    _host: Host
    _mailbox: Mailbox
    _services: dict[Any, Any]  # keyed by int handles; probed with any Dest

    # Class-level defaults: an idle service carries no instance entry for these
    # (memory per service matters at 100k services); the first write makes one.
    _current: Task | None = None  # the coroutine running right now
    _n_msgs = 0
    _n_calls = 0  # CALLs whose handler ran to its end (returned, raised, or response())
    _n_errors = 0  # handlers that raised, and messages for no handler
    _cpu = 0.0
    _exit_reason = ""
    _crit: Any = None  # critical-section state (node.service.Critical), made on first use
    _msg: Any = None  # the plain handler's message while it runs (response())
    _sinks: dict[int, Callable[[int, int, Any], None]] | None = None  # session -> reply sink
    _tokens: dict[Any, int] | None = None  # wait(token) -> the session waiting on it
    _responders: Any = None  # WeakSet of this service's unanswered responders

    def _bind_core(
        self, host: Host, handle: int, mailbox: Mailbox, services: dict[int, Any]
    ) -> None:
        self.handle = handle
        self._host = host
        self._mailbox = mailbox
        self._services = services  # the node's table, read-only here: the send fast path
        self._handlers = type(self)._handlers  # an instance slot: one lookup less per message
        self._state = STARTING
        self._session = 0
        self._suspended: dict[int, Task] = {}  # session -> coroutine waiting on it
        self._timers: dict[int, TimerEntry] = {}  # session -> deadline of a call or sleep
        self._callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] = {}
        self._forks: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._deferred: list[tuple[int, int, int, Any]] = []  # CALL/SEND held during on_start

    # -- what the node may read --------------------------------------------------

    def runtime_stats(self) -> dict[str, Any]:
        """State, messages handled, mailbox length, busy time and pending waits (racy
        reads from another thread: good for stats, not for decisions)."""
        return {
            "state": STATE_NAMES[self._state],
            "messages": self._n_msgs,
            "calls": self._n_calls,
            "errors": self._n_errors,
            "mailbox": len(self._mailbox.queue),
            "cpu": round(self._cpu, 6),
            "pending_calls": len(self._suspended),
            "waiting_in": sorted({t.method for t in list(self._suspended.values())}),
        }

    def queued(self) -> int:
        """Messages waiting in this service's mailbox now (racy read: fine for flow control)."""
        return len(self._mailbox.queue)

    # -- sessions and deadlines (the suspension helper's half) --------------------------

    def _new_session(self) -> int:
        """A session number unique within this service. Owner: the running worker."""
        self._session = s = self._session + 1
        return s

    def _arm(self, session: int, seconds: float, payload: Any) -> None:
        """Send this service TIMER ``payload`` on ``session`` after ``seconds``."""
        self._timers[session] = self._host.timer.add(seconds, self.handle, session, payload)

    # -- dispatch -----------------------------------------------------------------

    def _dispatch(self, msg: tuple[int, int, int, Any]) -> None:
        source, session, kind, payload = msg
        if kind <= CALL:
            if self._state != RUNNING:
                self._not_running(msg)
                return
            self._n_msgs += 1
            try:
                method, args = payload
            except ValueError:  # (method, args, traceparent): tracing is off here; a
                method, args = payload[0], payload[1]  # zero-cost try keeps (method, args) fast
            try:
                fn, is_async = self._handlers[method]
            except KeyError:
                self._no_handler(source, session, method)
                return
            if is_async:
                try:
                    coro = fn(self, *args)
                except Exception as exc:  # wrong arguments
                    self._failed(source, session, method, exc)
                else:
                    self._step(Task(coro, source, session, T_HANDLER, method), None, None)
            elif not session:  # a SEND: nobody to answer, response() refuses (_msg stays None)
                try:
                    fn(self, *args)
                except ServiceExit:
                    self._terminate("exit", None)
                    return
                except Exception as exc:
                    self._failed(source, 0, method, exc)
            else:
                self._msg = msg  # what response() answers later; cleared when it is taken
                try:
                    result = fn(self, *args)
                except ServiceExit:
                    if self._msg is msg:
                        self._terminate("exit", Task(_DONE, source, session, T_HANDLER, method))
                    else:
                        self._terminate("exit", None)
                    return
                except Exception as exc:
                    # Once response() took the call, its responder answers (or its drop).
                    self._failed(source, session if self._msg is msg else 0, method, exc)
                else:
                    if self._msg is msg:
                        self._host.reply(self.handle, source, session, REPLY, result)
                self._msg = None
                self._n_calls += 1
        elif kind <= TIMER:  # REPLY, ERROR, TIMER: resume whoever waits on the session
            self._resume(session, kind, payload)
        elif kind == SYSTEM:
            self._system(source, session, payload)
        elif kind == SOCKET:
            self._socket_event(session, payload)
        if self._forks:
            self._run_forks()

    def _resume(self, session: int, kind: int, payload: Any) -> None:
        if kind == TIMER:
            if payload == CALLBACK:
                cb = self._callbacks.pop(session, None)
                self._timers.pop(session, None)
                if cb is not None:
                    self._run_callable(cb[0], cb[1], "timeout")
                return
            task = self._suspended.pop(session, None)
            if task is None:
                return  # the reply won the race; its timer was already moot
            self._timers.pop(session, None)
            if payload == CALL_TIMEOUT:
                self._step(task, None, CallTimeout(f"no reply to session {session} in time"))
            else:
                self._step(task, None, None)
            return
        task = self._suspended.pop(session, None)
        if task is None:
            sinks = self._sinks
            sink = None if sinks is None else sinks.pop(session, None)
            if sink is not None:  # one reply of several a coroutine waits for (select)
                sink(session, kind, payload)
                return
            self._host.count_drop("late-reply")
            return
        entry = self._timers.pop(session, None)
        if entry is not None:
            self._host.timer.cancel(entry)
        if kind == REPLY:
            self._step(task, payload, None)
        else:
            self._step(task, None, exception_from(payload))

    def _step(self, task: Task, value: Any, exc: BaseException | None) -> None:
        """Run ``task`` until it suspends or finishes. The only place coroutines resume."""
        self._current = task
        try:
            waited = task.coro.send(value) if exc is None else task.coro.throw(exc)
        except StopIteration as stop:
            self._current = None
            self._finished(task, stop.value)
            return
        except ServiceExit:
            self._current = None
            self._terminate("exit", task)
            return
        except Exception as err:
            self._current = None
            self._task_failed(task, err)
            return
        self._current = None
        if waited.__class__ is int:
            self._suspended[waited] = task
        else:
            bad = TypeError(f"a skymesh service cannot await {waited!r}; use the Service API")
            self._step(task, None, bad)

    def _finished(self, task: Task, value: Any) -> None:
        kind = task.kind
        if kind == T_HANDLER:
            if task.session:
                self._n_calls += 1
                self._host.reply(self.handle, task.source, task.session, REPLY, value)
        elif kind == T_START:
            self._started(task.source, task.session)
        elif kind == T_STOP:
            self._finalize()

    def _task_failed(self, task: Task, err: Exception) -> None:
        kind = task.kind
        if kind == T_HANDLER:
            if task.session:
                self._n_calls += 1
            self._failed(task.source, task.session, task.method, err)
        elif kind == T_START:
            self._start_failed(task.source, task.session, err)
        elif kind == T_STOP:
            self._host.log_exc(self.handle, "on_stop failed", err)
            self._finalize()
        else:
            self._host.log_exc(self.handle, f"{task.method} failed", err)

    def _failed(self, source: int, session: int, method: str, err: BaseException) -> None:
        self._n_errors += 1
        if session:
            code = ERR_HANDLER
            self._host.reply(self.handle, source, session, ERROR, error_payload(code, err))
        else:
            self._host.log_exc(self.handle, f"{method} failed", err)

    def _no_handler(self, source: int, session: int, method: str) -> None:
        text = f"no handler {method!r} in {type(self).__name__}"
        self._n_errors += 1
        if session:
            payload = (ERR_NO_HANDLER, "NoHandler", text, "")
            self._host.reply(self.handle, source, session, ERROR, payload)
        else:
            self._host.count_drop("no-handler")
            self._host.log(self.handle, "warning", text)

    def _not_running(self, msg: tuple[int, int, int, Any]) -> None:
        source, session, kind, _ = msg
        if self._state == STARTING:
            self._deferred.append(msg)
        elif kind == CALL and session:
            payload = (ERR_EXITED, "ServiceExited", f"service {self.handle:#x} has exited", "")
            self._host.reply(self.handle, source, session, ERROR, payload)
        else:
            self._host.count_drop("dead-service")

    def _run_callable(self, fn: Callable[..., Any], args: tuple[Any, ...], what: str) -> None:
        try:
            result = fn(*args)
        except ServiceExit:
            self._terminate("exit", None)
            return
        except Exception as err:
            self._host.log_exc(self.handle, f"{what} failed", err)
            return
        if isinstance(result, Coroutine):
            self._step(Task(result, 0, 0, T_OTHER, what), None, None)

    def _run_forks(self) -> None:
        forks = self._forks
        while forks and self._state < EXITED:
            fn, args = forks.pop(0)
            self._run_callable(fn, args, getattr(fn, "__name__", "fork"))

    def _socket_event(self, session: int, payload: Any) -> None:
        """A SOCKET message; the socket API (``node._sockets.api``) overrides this."""
        self._host.count_drop("socket-no-handler")

    # -- system events --------------------------------------------------------------

    def _system(self, source: int, session: int, payload: Any) -> None:
        event, data = payload
        if event == "start":
            self._start(source, session, data)
        elif event in ("kill", "stop"):
            self._terminate(event, None)
        elif event == RELOAD:
            self._swap_class(source, session, data)
        elif self._state == RUNNING:
            hook = getattr(self, _HOOKS.get(event, "on_system"), None)
            if hook is None:
                return
            args = tuple(data) if event in _HOOKS else (event, data)
            self._run_callable(hook, args, event)

    def _swap_class(self, source: int, session: int, new: Any) -> None:
        """Become an instance of ``new`` (the same class from a reloaded module), between
        two messages on this service's own worker; answer ``session`` with the outcome.

        Instance state stays (``__dict__`` is kept); the handler table is rebuilt, so
        the next message dispatches to the new code. Coroutines suspended in old
        handlers hold old function objects and finish in the old code. Only the node's
        reloader posts this event: the harbor refuses it from the network and a class
        object cannot cross the wire.
        """
        old = type(self)
        if self._state >= STOPPING:
            outcome = "not swapped: the service is stopping"
        elif not (isinstance(new, type) and issubclass(new, ServiceCore)):
            outcome = f"not swapped: {new!r} is not a service class"
        else:
            try:
                self.__class__ = new
            except TypeError as err:  # incompatible layout (__slots__ changed)
                outcome = f"not swapped: {err}"
            else:
                self._handlers = new._handlers
                running = self._state == RUNNING
                outcome = "swapped" if running else "swapped (starting: no on_reload)"
        if outcome == "swapped":
            hook = getattr(self, "on_reload", None)
            outcome = self._run_on_reload(hook, old) if hook is not None else outcome
        if session:
            self._host.reply(self.handle, source, session, REPLY, outcome)

    def _run_on_reload(self, hook: Callable[..., Any], old: type) -> str:
        """Run ``on_reload(old)``; the outcome line the reloader reports."""
        try:
            result = hook(old)
        except ServiceExit:
            self._terminate("exit", None)
            return "swapped; on_reload ended it"
        except Exception as err:
            self._host.log_exc(self.handle, "on_reload failed", err)
            return f"swapped; on_reload raised {type(err).__name__}: {err}"
        if isinstance(result, Coroutine):
            self._step(Task(result, 0, 0, T_OTHER, "on_reload"), None, None)
        return "swapped"

    def _start(self, source: int, session: int, args: tuple[Any, ...]) -> None:
        on_start = getattr(self, "on_start", None)
        try:
            result = on_start(*args) if on_start is not None else None
        except ServiceExit:
            self._start_failed(source, session, RuntimeError("exit() during on_start"))
            return
        except Exception as err:
            self._start_failed(source, session, err)
            return
        if isinstance(result, Coroutine):
            self._step(Task(result, source, session, T_START, "on_start"), None, None)
        else:
            self._started(source, session)

    def _started(self, source: int, session: int) -> None:
        self._state = RUNNING
        deferred, self._deferred = self._deferred, []
        if deferred:
            self._host.requeue(self, deferred)
        self._host.started(self, source, session)

    def _start_failed(self, source: int, session: int, err: BaseException) -> None:
        self._close_tasks(None)
        payload = error_payload(ERR_START, err)
        self._state = EXITED
        self._exit_reason = "start failed"
        self._host.retire(self, "start failed")
        self._drain()
        self._host.reply(self.handle, source, session, ERROR, payload)

    # -- ending -----------------------------------------------------------------------

    def _terminate(self, reason: str, running: Task | None) -> None:
        """Unwind everything the service waits on, run on_stop, then finalize."""
        if self._state >= STOPPING:
            if running is not None and running.kind == T_STOP:
                self._finalize()
            return
        if self._state == STARTING:
            # Killed before on_start finished: the creator must hear of it.
            start = running if running is not None and running.kind == T_START else None
            if start is None:
                start = next((t for t in self._suspended.values() if t.kind == T_START), None)
            self._close_tasks(running)
            if start is not None:
                self._start_failed(start.source, start.session, RuntimeError(f"service {reason}"))
            else:
                self._state = EXITED
                self._host.retire(self, reason)
                self._drain()
            return
        self._state = STOPPING
        self._exit_reason = reason
        self._close_tasks(running)
        on_stop = getattr(self, "on_stop", None)
        try:
            result = on_stop() if on_stop is not None else None
        except ServiceExit:
            result = None
        except Exception as err:
            self._host.log_exc(self.handle, "on_stop failed", err)
            result = None
        if isinstance(result, Coroutine):
            self._step(Task(result, 0, 0, T_STOP, "on_stop"), None, None)
        else:
            self._finalize()

    def _close_tasks(self, running: Task | None) -> None:
        exited = (ERR_EXITED, "ServiceExited", f"service {self.handle:#x} exited", "")
        host = self._host
        tasks = list(self._suspended.values())
        if running is not None:
            tasks.append(running)
        self._suspended.clear()
        for entry in self._timers.values():
            host.timer.cancel(entry)
        self._timers.clear()
        self._callbacks.clear()
        self._forks.clear()
        self._sinks = None  # late replies to abandoned selects are counted as late
        for task in tasks:
            if task is not running:
                try:
                    task.coro.close()
                except BaseException as err:  # a coroutine that refuses to close
                    host.log_exc(self.handle, "closing a coroutine failed", err)
            if task.kind == T_HANDLER and task.session:
                host.reply(self.handle, task.source, task.session, ERROR, exited)
        for msg in self._deferred:
            self._not_running_dead(msg)
        self._deferred.clear()
        for responder in list(self._responders or ()):
            responder.service_ended()

    # -- hooks for the waiting verbs above the core ----------------------------------------

    def _sink(self, session: int, sink: Callable[[int, int, Any], None]) -> None:
        """Hand the reply on ``session`` to ``sink(session, kind, payload)`` instead of a
        suspended coroutine (several replies awaited by one coroutine)."""
        if self._sinks is None:
            self._sinks = {}
        self._sinks[session] = sink

    def _unsink(self, session: int) -> bool:
        """Withdraw a sink; True if it was still waiting."""
        return self._sinks is not None and self._sinks.pop(session, None) is not None

    def _not_running_dead(self, msg: tuple[int, int, int, Any]) -> None:
        saved, self._state = self._state, EXITED
        self._not_running(msg)
        self._state = saved

    def _finalize(self) -> None:
        if self._state == EXITED:
            return
        self._close_tasks(None)
        self._state = EXITED
        self._host.retire(self, self._exit_reason or "exit")
        self._drain()

    def _drain(self) -> None:
        q = self._mailbox.queue
        while q:
            try:
                msg = q.popleft()
            except IndexError:
                break
            if msg[2] <= CALL:
                self._not_running(msg)


_HOOKS = {
    "down": "on_down",
    "lock-lost": "on_lock_lost",
    "config": "on_config",
    "name-lost": "on_name_lost",
    "member": "on_member",
    "channel": "on_channel",
    "coord": "on_coord",
    "group": "on_group",
}
