"""Dispatching messages to a service and resuming its coroutines: ``Core``.

This is the only code that runs handlers and resumes service coroutines. What
it needs from its node is ``host.Host``; the states, task kinds and event
names it shares with the rest of ``node`` are in ``host`` too.
A service is run by one worker at a time (the mailbox's ``in_global``
invariant), so every field here is owned by "the worker currently running
this service" and needs no lock.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ..errors import CallTimeout, Overloaded
from ..message import (
    CALL,
    CALL_TIMEOUT,
    ERR_EXITED,
    ERR_HANDLER,
    ERR_NO_HANDLER,
    ERR_START,
    ERROR,
    REPLY,
    SEND,
    SOCKET,
    SYSTEM,
    TIMER,
)
from .faults import error_payload, exception_from
from .host import (
    CALLBACK,
    EXITED,
    RELOAD,
    RUNNING,
    STARTING,
    STATE_NAMES,
    STOPPING,
    T_HANDLER,
    T_OTHER,
    T_START,
    T_STOP,
    Host,
    ServiceExit,
)

if TYPE_CHECKING:
    from .mailbox import Mailbox
    from .timer import TimerEntry

class _Done:
    """Stands in for the coroutine of a plain handler that called exit()."""

    def close(self) -> None:
        pass


_DONE: Any = _Done()


class Task:
    """A service coroutine and whom to answer when it finishes (C fields when compiled)."""

    __slots__ = ("coro", "kind", "method", "session", "source")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], source: int, session: int, kind: int, method: str
    ) -> None:
        self.coro = coro
        self.source = source
        self.session = session
        self.kind = kind
        self.method = method


class Core:
    """The runtime half of one service: its state, dispatch and coroutine resumption.

    A service (``node.service.Service``, a plain Python object) holds its core as
    ``_core``; the core holds the service as ``service`` and calls its handlers and
    hooks on it. Kept apart, rather than being the service's base class, so the
    core can be a native class when compiled (``node.core.native``) while the
    service stays an ordinary Python object: CPython 3.11 keeps an ordinary
    object's attributes inline and specialises their access, and loses both for
    a subclass of a native class (measured in docs/design.md, "A compiled core").

    Fields are fixed (``__slots__`` here; C fields in ``runner.pxd`` when compiled).
    The mailbox's ``service`` is the core: workers run ``Core._dispatch``.
    """

    __slots__ = (
        "_callbacks", "_cpu", "_crit", "_current", "_deferred", "_exit_reason", "_forks",
        "_handlers", "_hook", "_host", "_mailbox", "_msg", "_n_calls", "_n_errors",
        "_n_msgs", "_responders", "_services", "_session", "_sinks", "_state",
        "_suspended", "_timers", "_tokens", "handle", "service",
    )

    service: Any  # the Service this core runs (node.service.Service)
    handle: int
    _handlers: dict[str, tuple[Callable[..., Any], bool]]  # from the class; tracing, reload
    _hook: Callable[[tuple[int, int, int, Any]], None] | None  # tracing's dispatch, if on
    _host: Host
    _mailbox: Mailbox
    _services: dict[Any, Any]  # keyed by int handles; probed with any Dest
    _current: Task | None  # the coroutine running right now
    _n_msgs: int
    _n_calls: int  # CALLs whose handler ran to its end (returned, raised, or response())
    _n_errors: int  # handlers that raised, and messages for no handler
    _cpu: float
    _exit_reason: str
    _crit: Any  # critical-section state (node.service.Critical), made on first use
    _msg: Any  # the plain handler's message while it runs (response())
    _sinks: dict[int, Callable[[int, int, Any], None]] | None  # session -> reply sink
    _tokens: dict[Any, int] | None  # wait(token) -> the session waiting on it
    _responders: Any  # WeakSet of this service's unanswered responders

    def __init__(
        self, service: Any, host: Host, handle: int, mailbox: Mailbox,
        services: dict[int, Any],
    ) -> None:
        self.service = service
        self.handle = handle
        self._host = host
        self._mailbox = mailbox
        self._services = services  # the node's table, read-only here: the send fast path
        # The class's table (Service.__init_subclass__); an instance field so that
        # tracing and live reload can give this service its own.
        self._handlers = type(service)._handler_table
        self._hook = None
        self._state = STARTING
        self._session = 0
        # Made on first use too: session -> coroutine waiting on it, and session ->
        # deadline of a call or sleep (an idle service has neither).
        self._suspended: dict[int, Task] | None = None
        self._timers: dict[int, TimerEntry] | None = None
        # Made on first use (memory per idle service): timer id -> timeout() callback,
        # fork()ed callables, and CALL/SEND/SOCKET messages held while on_start runs.
        self._callbacks: dict[int, tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        self._forks: list[tuple[Callable[..., Any], tuple[Any, ...]]] | None = None
        self._deferred: list[tuple[int, int, int, Any]] | None = None
        self._current = None
        self._n_msgs = self._n_calls = self._n_errors = 0
        self._cpu = 0.0
        self._exit_reason = ""
        self._crit = self._msg = self._sinks = self._tokens = self._responders = None

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
            "pending_calls": len(self._suspended or ()),
            "waiting_in": sorted({t.method for t in list((self._suspended or {}).values())}),
        }

    def queued(self) -> int:
        """Messages waiting in this service's mailbox now (racy read: fine for flow control)."""
        return len(self._mailbox.queue)

    # -- the local fast paths of send and call (Router.deliver inlined) ------------------

    def _send_local(self, dest: Any, method: str, args: tuple[Any, ...]) -> bool:
        """Queue a SEND to ``dest`` if it is a service of this node; False if it is not
        (the caller routes it). A full mailbox drops it and counts (``Host.refused``)."""
        svc = self._services.get(dest)
        if svc is None:
            return False
        mb = svc._mailbox
        try:
            mb.offer((self.handle, 0, SEND, (method, args)))
        except Overloaded:
            self._host.refused(svc.handle, SEND)
        return True

    def _call_local(self, dest: Any, method: str, args: tuple[Any, ...], timeout: float) -> int:
        """Queue a CALL to ``dest`` if it is a service of this node and arm its deadline
        (none for ``timeout <= 0``); the session to wait on, 0 if ``dest`` is not local.
        Raises ``Overloaded`` (counted) when its mailbox is full."""
        svc = self._services.get(dest)
        if svc is None:
            return 0
        mb = svc._mailbox
        self._session = s = self._session + 1
        try:
            mb.offer((self.handle, s, CALL, (method, args)))
        except Overloaded:
            self._host.refused(svc.handle, CALL)
            raise
        if timeout > 0:  # suspend() inlined too: nothing to withdraw from a local mailbox
            if self._timers is None:
                self._timers = {}
            self._timers[s] = self._host.timer.add(timeout, self.handle, s, CALL_TIMEOUT)
        return s

    # -- sessions and deadlines (the suspension helper's half) --------------------------

    def _new_session(self) -> int:
        """A session number unique within this service. Owner: the running worker."""
        self._session = s = self._session + 1
        return s

    def _arm(self, session: int, seconds: float, payload: Any) -> None:
        """Send this service TIMER ``payload`` on ``session`` after ``seconds``."""
        if self._timers is None:
            self._timers = {}
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
                    coro = fn(self.service, *args)
                except Exception as exc:  # wrong arguments
                    self._failed(source, session, method, exc)
                else:
                    self._step(Task(coro, source, session, T_HANDLER, method), None, None)
            elif not session:  # a SEND: nobody to answer, response() refuses (_msg stays None)
                try:
                    fn(self.service, *args)
                except ServiceExit:
                    self._terminate("exit", None)
                    return
                except Exception as exc:
                    self._failed(source, 0, method, exc)
            else:
                self._msg = msg  # what response() answers later; cleared when it is taken
                try:
                    result = fn(self.service, *args)
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
            self.service._socket_event(session, payload)
        if self._forks:
            self._run_forks()

    def _resume(self, session: int, kind: int, payload: Any) -> None:
        suspended, timers = self._suspended, self._timers  # None (or empty) until used
        if kind == TIMER:
            if timers:
                timers.pop(session, None)
            if payload == CALLBACK:
                cbs = self._callbacks
                cb = None if cbs is None else cbs.pop(session, None)
                if cb is not None:
                    self._run_callable(cb[0], cb[1], "timeout")
                return
            task = suspended.pop(session, None) if suspended else None
            if task is None:
                return  # the reply won the race; its timer was already moot
            if payload == CALL_TIMEOUT:
                self._step(task, None, CallTimeout(f"no reply to session {session} in time"))
            else:
                self._step(task, None, None)
            return
        task = suspended.pop(session, None) if suspended else None
        if task is None:
            sinks = self._sinks
            sink = None if sinks is None else sinks.pop(session, None)
            if sink is not None:  # one reply of several a coroutine waits for (select)
                sink(session, kind, payload)
                return
            self._host.count_drop("late-reply")
            return
        entry = timers.pop(session, None) if timers else None
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
            if self._suspended is None:
                self._suspended = {}
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
        text = f"no handler {method!r} in {type(self.service).__name__}"
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
            self._defer(msg)
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
        while forks and self._state < EXITED:  # forks is not None: checked by _dispatch
            fn, args = forks.pop(0)
            self._run_callable(fn, args, getattr(fn, "__name__", "fork"))

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
            hook = getattr(self.service, _HOOKS.get(event, "on_system"), None)
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
        svc = self.service
        old = type(svc)
        if self._state >= STOPPING:
            outcome = "not swapped: the service is stopping"
        elif not isinstance(table := getattr(new, "_handler_table", None), dict):
            outcome = f"not swapped: {new!r} is not a service class"
        else:
            try:
                svc.__class__ = new
            except TypeError as err:  # incompatible layout (__slots__ changed)
                outcome = f"not swapped: {err}"
            else:
                self._handlers = table
                running = self._state == RUNNING
                outcome = "swapped" if running else "swapped (starting: no on_reload)"
        if outcome == "swapped":
            hook = getattr(svc, "on_reload", None)
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
        on_start = getattr(self.service, "on_start", None)
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
        deferred, self._deferred = self._deferred, None
        if deferred:
            self._host.requeue(self.service, deferred)
        self._host.started(self.service, source, session)

    def _start_failed(self, source: int, session: int, err: BaseException) -> None:
        self._close_tasks(None)
        payload = error_payload(ERR_START, err)
        self._state = EXITED
        self._exit_reason = "start failed"
        self._host.retire(self.service, "start failed")
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
                waiting = (self._suspended or {}).values()
                start = next((t for t in waiting if t.kind == T_START), None)
            self._close_tasks(running)
            if start is not None:
                self._start_failed(start.source, start.session, RuntimeError(f"service {reason}"))
            else:
                self._state = EXITED
                self._host.retire(self.service, reason)
                self._drain()
            return
        self._state = STOPPING
        self._exit_reason = reason
        self._close_tasks(running)
        on_stop = getattr(self.service, "on_stop", None)
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
        tasks = list((self._suspended or {}).values())
        if running is not None:
            tasks.append(running)
        if self._suspended:
            self._suspended.clear()
        if self._timers:
            for entry in self._timers.values():
                host.timer.cancel(entry)
            self._timers.clear()
        if self._callbacks:
            self._callbacks.clear()
        if self._forks:
            self._forks.clear()  # emptied, not dropped: _run_forks may be iterating it
        self._sinks = None  # late replies to abandoned selects are counted as late
        for task in tasks:
            if task is not running:
                try:
                    task.coro.close()
                except BaseException as err:  # a coroutine that refuses to close
                    host.log_exc(self.handle, "closing a coroutine failed", err)
            if task.kind == T_HANDLER and task.session:
                host.reply(self.handle, task.source, task.session, ERROR, exited)
        deferred, self._deferred = self._deferred, None
        for msg in deferred or ():
            self._not_running_dead(msg)
        for responder in list(self._responders or ()):
            responder.service_ended()

    # -- fork, timeout and deferral (their containers are made on first use) -------------

    def _fork(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        """Run ``fn(*args)`` after the current message (``Service.fork``)."""
        if self._forks is None:
            self._forks = []
        self._forks.append((fn, args))

    def _add_callback(self, seconds: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> int:
        """Run ``fn(*args)`` after ``seconds`` (``Service.timeout``); the timer id."""
        s = self._new_session()
        if self._callbacks is None:
            self._callbacks = {}
        self._callbacks[s] = (fn, args)
        self._arm(s, seconds, CALLBACK)
        return s

    def _cancel_callback(self, timer_id: int) -> bool:
        """Cancel a pending ``_add_callback``; False if it already ran."""
        entry = self._timers.pop(timer_id, None) if self._timers else None
        if entry is not None:
            self._host.timer.cancel(entry)
        return self._callbacks is not None and self._callbacks.pop(timer_id, None) is not None

    def _defer(self, msg: tuple[int, int, int, Any]) -> None:
        """Hold ``msg`` until ``on_start`` has finished (then it is requeued first)."""
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(msg)

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
        self._host.retire(self.service, self._exit_reason or "exit")
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


def run_turns(sched: Any, mb: Mailbox, w: Any, weight: int) -> None:
    """Run ``mb``'s messages on worker ``w``: one turn, and more while no other mailbox
    waits (``Scheduler._loop``'s busy path; it owns ``mb`` and hands it back after).

    A turn is one message for weight -1 (skynet's), else ``len >> weight`` (at least
    one). Here rather than in the scheduler so that a compiled core runs the whole
    busy path natively: a typed ``Core._dispatch`` call per message.
    """
    queue = mb.global_queue
    q = mb.queue
    svc = mb.service
    hook = svc._hook  # tracing's dispatch (node._tracing), set before the first message
    if weight < 0:
        # One message a turn; turns follow each other at once while no other mailbox
        # waits. Kept apart from the batch loop below on purpose: merged (n = 1 for
        # -1), one-way and fan-in measured 6-10% slower in bench.local.
        while True:
            n = len(q)
            if n > mb.overload:
                mb.overload *= 2
                sched._on_overload(svc, n)
            if not n:  # only this worker pops, so a non-empty q stays non-empty
                break
            msg = q.popleft()
            w.message = msg
            try:
                if hook is None:
                    svc._dispatch(msg)
                else:
                    hook(msg)
            except BaseException as exc:  # an interrupt that landed after its handler
                sched._on_stray(exc)
            if queue or not q or not sched._running:
                break
    else:
        while True:
            n = len(q)
            if n > mb.overload:
                mb.overload *= 2
                sched._on_overload(svc, n)
            n = (n >> weight) or 1  # batch_size() inlined
            while n:
                n -= 1
                if not q:
                    break
                msg = q.popleft()
                w.message = msg
                try:
                    if hook is None:
                        svc._dispatch(msg)
                    else:
                        hook(msg)
                except BaseException as exc:  # a late interrupt, as above
                    sched._on_stray(exc)
            if queue or not q or not sched._running:
                break

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
