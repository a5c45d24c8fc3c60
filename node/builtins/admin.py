"""``.admin``: the node's HTTP admin endpoint — ``/metrics``, ``/healthz``, ``/readyz``.

Off by default; ``admin_port`` turns it on (``0``: any free port, asked
with ``node.call(".admin", "address")``). It binds ``admin_bind``
(``127.0.0.1`` by default). Bound anywhere but loopback it answers only
requests with ``Authorization: Bearer <console_token>``, and the node refuses
to start such an endpoint without a token.

- ``/metrics``: the Prometheus text format, written by ``prometheus_client``
  from :class:`node.builtins.metrics.NodeCollector` (the node's own figures).
- ``/healthz``: 200 when the coordination session is connected and a call
  through the node's own workers (this service's ``ping``) is answered within
  :data:`HEALTH_DEADLINE` seconds; 503 and the reason otherwise.
- ``/readyz``: ``/healthz`` and this node visible in the cluster membership.

The server (``wsgiref`` with a thread per request, at most
:data:`MAX_REQUESTS` at once, more are answered 503) runs on its own thread,
``skymesh-admin``; it stops with the service and with the node.
"""

from __future__ import annotations

import hmac
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from ..config import is_loopback
from ..node import Node
from ..service import Service, expose
from .metrics import NodeCollector

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

__all__ = ["HEALTH_DEADLINE", "MAX_REQUESTS", "Admin", "AdminServer"]

HEALTH_DEADLINE = 2.0
"""Seconds the loopback call of ``/healthz`` may take before the node is unhealthy."""

MAX_REQUESTS = 8
"""Requests served at once; more are refused with 503 (a scrape storm cannot pile up
threads blocked on a slow node)."""

Body = Iterable[bytes]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a request blocked on a dead node never holds the process
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request on stderr (scrapes come every few seconds)."""


class AdminServer:
    """The HTTP server and its thread; :meth:`stop` is idempotent."""

    def __init__(self, host: str, port: int, app: Callable[..., Body]) -> None:
        self._server = make_server(host, port, app, server_class=_Server,
                                   handler_class=_QuietHandler)
        self.address: tuple[str, int] = self._server.server_address[:2]  # type: ignore[assignment]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.2}, name="skymesh-admin", daemon=True)
        self._thread.start()
        self._stopped = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Stop serving and join the thread."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


class Admin(Service):
    """Serves the admin endpoint for the node it runs on (see the module docstring)."""

    def on_start(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None) -> None:
        node = Node.of(self)
        if not is_loopback(host) and not token:
            raise PermissionError(f"admin endpoint on {host} needs console_token")
        self._token = None if is_loopback(host) else (token or "").encode()
        self._node = node
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(MAX_REQUESTS)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(NodeCollector(node, self._outcomes))
        self._metrics = make_wsgi_app(registry)
        self._server = AdminServer(host, port, self._app)
        node.add_component(self._server)

    def on_stop(self) -> None:
        self._server.stop()

    @expose
    def ping(self) -> str:
        """The loopback round trip of ``/healthz``."""
        return "pong"

    @expose
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the endpoint listens on."""
        return self._server.address

    # -- HTTP (request threads) ------------------------------------------------------------

    def _outcomes(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    def _count(self, outcome: str) -> None:
        with self._counts_lock:
            self._counts[outcome] += 1

    def _app(self, environ: WSGIEnvironment, start: StartResponse) -> Body:
        if not self._slots.acquire(blocking=False):
            self._count("busy")
            return _text(start, "503 Service Unavailable", "busy: too many admin requests\n")
        try:
            return self._route(environ, start)
        finally:
            self._slots.release()

    def _route(self, environ: WSGIEnvironment, start: StartResponse) -> Body:
        if self._token is not None and not self._authorized(environ):
            self._count("unauthorized")
            return _text(start, "401 Unauthorized", "unauthorized\n",
                         [("WWW-Authenticate", 'Bearer realm="skymesh"')])
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            self._count("bad-method")
            return _text(start, "405 Method Not Allowed", "GET only\n", [("Allow", "GET, HEAD")])
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            self._count("metrics")
            body: Body = self._metrics(environ, start)
            return body
        if path in ("/healthz", "/readyz"):
            problem = self.health(ready=path == "/readyz")
            self._count(path[1:] + ("" if problem is None else "-failed"))
            if problem is None:
                return _text(start, "200 OK", "ok\n")
            return _text(start, "503 Service Unavailable", f"unhealthy: {problem}\n")
        self._count("not-found")
        return _text(start, "404 Not Found", "not found: /metrics, /healthz, /readyz\n")

    def _authorized(self, environ: WSGIEnvironment) -> bool:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or self._token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    def health(self, ready: bool = False) -> str | None:
        """None when healthy (and ready, with ``ready``); else why not, in a few words.

        Called on a request thread: it blocks that thread, never a worker."""
        node = self._node
        state = node.health.value
        if state != "connected":
            return f"coordination session {state}"
        try:
            node.call(self.handle, "ping", timeout=HEALTH_DEADLINE)
        except Exception as exc:
            return f"no answer through the workers in {HEALTH_DEADLINE}s ({type(exc).__name__})"
        if ready and node.node_id not in node.members():
            return f"node {node.node_id} is not in the cluster membership"
        return None


def _text(
    start: StartResponse, status: str, text: str, headers: list[tuple[str, str]] | None = None,
) -> Body:
    body = text.encode()
    start(status, [("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body))), *(headers or [])])
    return [body]
