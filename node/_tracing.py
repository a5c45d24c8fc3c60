"""Tracing across nodes: each handler run is an OpenTelemetry span whose parent is the
caller's, carried in the message as a W3C ``traceparent``.

The carrier: a traced SEND/CALL payload is ``(method, args, traceparent)``
instead of ``(method, args)``; the harbor carries the payload untouched, so
the frame format does not change. Every runner accepts both shapes (the
untraced runner reads the three-element form in a zero-cost ``try``), so a
node with tracing off still serves a traced caller; it just starts no span.

With tracing on (``Node(tracing=True)``, config ``tracing = true``) the node
calls :meth:`Tracing.instrument` on every service it binds, which gives that
one instance (never the class) its own dispatch (the core's ``_hook``), ``send`` and ``call``
and a handler table whose functions open and close the span. With tracing
off nothing here is imported or called: the message path is untouched.

The span of an ``async`` handler lives until its coroutine finishes; each
time the coroutine resumes, its span is made current again, so calls made
after an ``await`` carry the same parent. User code inside a handler can
open child spans with the usual ``tracer.start_as_current_span``.

``opentelemetry-api`` is an optional extra (``pip install 'skymesh[tracing]'``);
spans are exported by whatever ``TracerProvider`` the process set (the SDK's,
with its exporters), or the one given to the node.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Coroutine
from typing import Any

from .core.host import RUNNING
from .core.suspend import suspend
from .errors import ConfigError
from .message import CALL, SEND

__all__ = ["MAX_TRACEPARENT", "Tracing"]

MAX_TRACEPARENT = 256
"""Longest traceparent read from a message (version 00 is 55 characters); longer is
ignored and counted, as is one that does not parse."""

Handlers = dict[str, tuple[Callable[..., Any], bool]]


class Tracing:
    """The node's tracer and the instrumentation of its services."""

    def __init__(self, provider: Any = None) -> None:
        try:
            from opentelemetry import context, trace
            from opentelemetry.trace.propagation.tracecontext import (
                TraceContextTextMapPropagator,
            )
        except ImportError as exc:
            raise ConfigError(
                "tracing = true needs opentelemetry-api: pip install 'skymesh[tracing]'"
            ) from exc
        self._trace = trace
        self._context = context
        self._propagator = TraceContextTextMapPropagator()
        self.tracer = (provider or trace.get_tracer_provider()).get_tracer("skymesh")
        self._server = trace.SpanKind.SERVER
        self._consumer = trace.SpanKind.CONSUMER
        self._error = trace.StatusCode.ERROR
        self._tables: dict[type, Handlers] = {}
        self._tables_lock = threading.Lock()
        self.bad_context = 0  # traceparents ignored (too long, not a string, unparsable)

    # -- the carrier ---------------------------------------------------------------------

    def current(self) -> str | None:
        """The ``traceparent`` of the calling thread's current span, None if none."""
        ctx = self._trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def payload(self, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """A SEND/CALL payload carrying the current span as parent, if there is one."""
        tp = self.current()
        return (method, args) if tp is None else (method, args, tp)

    def _parent(self, tp: Any) -> Any:
        """The OpenTelemetry context a received traceparent stands for (None: a root)."""
        if tp is None:
            return None
        if not isinstance(tp, str) or len(tp) > MAX_TRACEPARENT:
            self.bad_context += 1
            return None
        ctx = self._propagator.extract({"traceparent": tp})
        if not self._trace.get_current_span(ctx).get_span_context().is_valid:
            self.bad_context += 1
            return None
        return ctx

    # -- instrumentation -----------------------------------------------------------------

    def instrument(self, svc: Any) -> None:
        """Give ``svc`` (a bound ``Service``; this instance only) a traced dispatch,
        send and call. (Typed ``Any``: this module sits below ``node.service``.)"""
        svc._handlers = self._table(type(svc))
        svc._core._hook = self._dispatcher(svc)  # the workers call it instead of _dispatch
        svc.send = self._sender(svc)
        svc.call = self._caller(svc)

    def _table(self, cls: type) -> Handlers:
        """``cls``'s handlers, each wrapped to record its exception on the span and, for
        a coroutine, to keep the span current while it runs (built once per class)."""
        with self._tables_lock:
            table = self._tables.get(cls)
            if table is None:
                handlers: Handlers = cls._handler_table  # type: ignore[attr-defined]
                table = {name: (self._wrap(fn, is_async), is_async)
                         for name, (fn, is_async) in handlers.items()}
                self._tables[cls] = table
            return table

    def _wrap(self, fn: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
        error = self._error
        get_span = self._trace.get_current_span
        attach, detach = self._context.attach, self._context.detach
        in_context = self._trace.set_span_in_context

        if not is_async:
            def plain(svc: Any, *args: Any) -> Any:
                try:
                    return fn(svc, *args)
                except Exception as exc:
                    span = get_span()
                    span.record_exception(exc)
                    span.set_status(error, type(exc).__name__)
                    raise

            return plain

        def start(svc: Any, *args: Any) -> Any:
            coro = fn(svc, *args)  # raising here leaves the span to the dispatcher
            span, svc._trace_span = svc._trace_span, None  # the coroutine owns it now
            return _TracedCoro(coro, span, attach, detach, in_context, error)

        return start

    def _dispatcher(self, svc: Any) -> Callable[[tuple[int, int, int, Any]], None]:
        core = svc._core._dispatch
        tracer, parent_of = self.tracer, self._parent
        server, consumer, error = self._server, self._consumer, self._error
        attach, detach = self._context.attach, self._context.detach
        in_context = self._trace.set_span_in_context
        name, table = type(svc).__name__, self._table
        svc._trace_span = None
        traced_cls = [type(svc)]  # the class whose wrapped table svc has now

        def dispatch(msg: tuple[int, int, int, Any]) -> None:
            source, session, kind, payload = msg
            if kind > CALL or svc._state != RUNNING:
                core(msg)  # not a handler run; a resumed coroutine restores its own span
                return
            if type(svc) is not traced_cls[0]:  # a live reload swapped the class
                nonlocal name
                traced_cls[0] = type(svc)
                name, svc._handlers = type(svc).__name__, table(type(svc))
            tp = None
            try:
                method, args = payload
            except (TypeError, ValueError):
                try:
                    method, args, tp = payload
                except (TypeError, ValueError):
                    core(msg)  # not a SEND/CALL payload at all: the runner answers it
                    return
                msg = (source, session, kind, (method, args))
            span = tracer.start_span(
                f"{name}.{method}", context=parent_of(tp), kind=server if session else consumer,
                attributes={"skymesh.service": svc.handle, "skymesh.source": source},
            )
            if method not in svc._handlers:
                span.set_status(error, "no handler")
            svc._trace_span = span
            token = attach(in_context(span))
            try:
                core(msg)
            finally:
                detach(token)
                if svc._trace_span is span:  # not handed to a coroutine: the run is over
                    svc._trace_span = None
                    span.end()

        return dispatch

    def _sender(self, svc: Any) -> Callable[..., None]:
        plain_send, current = type(svc).send, self.current

        def send(dest: Any, method: str, *args: Any) -> None:
            tp = current()
            if tp is None:
                plain_send(svc, dest, method, *args)
            else:
                svc._router.deliver(svc.handle, dest, 0, SEND, (method, args, tp))

        return send

    def _caller(self, svc: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
        plain_call, current = type(svc).call, self.current

        async def call(
            dest: Any, method: str, *args: Any, timeout: float | None = None,
            wait: float | None = None,
        ) -> Any:
            tp = current()
            if tp is None:
                return await plain_call(svc, dest, method, *args, timeout=timeout, wait=wait)
            t = svc._host.call_timeout if timeout is None else timeout
            if wait:
                dest = await svc._reachable(dest, wait)
            payload = (method, args, tp)
            return await suspend(
                svc, lambda s: svc._router.deliver(svc.handle, dest, s, CALL, payload),
                t if t > 0 else None, lambda s: svc._withdraw(dest, s),
            )

        return call


class _TracedCoro:
    """An async handler's coroutine with its span: current while it runs, ended when it
    finishes, fails or is closed. Only ``send``/``throw``/``close`` are used by the
    runner, which is all this offers."""

    __slots__ = ("attach", "coro", "detach", "error", "in_context", "span")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], span: Any, attach: Callable[[Any], Any],
        detach: Callable[[Any], None], in_context: Callable[[Any], Any], error: Any,
    ) -> None:
        self.coro, self.span = coro, span
        self.attach, self.detach, self.in_context, self.error = attach, detach, in_context, error

    def send(self, value: Any) -> Any:
        return self._run(self.coro.send, value)

    def throw(self, exc: BaseException) -> Any:
        return self._run(self.coro.throw, exc)

    def close(self) -> None:
        try:
            self.coro.close()
        finally:
            self._end()

    def _run(self, step: Callable[[Any], Any], arg: Any) -> Any:
        token = self.attach(self.in_context(self.span)) if self.span is not None else None
        try:
            return step(arg)
        except StopIteration:
            self._end()
            raise
        except Exception as exc:
            if self.span is not None:
                self.span.record_exception(exc)
                self.span.set_status(self.error, type(exc).__name__)
            self._end()
            raise
        except BaseException:  # ServiceExit: the service ends, and so does the span
            self._end()
            raise
        finally:
            if token is not None:
                self.detach(token)

    def _end(self) -> None:
        span, self.span = self.span, None
        if span is not None:
            span.end()
