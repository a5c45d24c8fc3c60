"""The socket half of the Service API: ``listen``, ``connect``, ``socket_write``, ...

Mixed into ``Service``. Every call hands work to the node's socket thread
(``_socket_thread``), started on first use; network events come back as
``SOCKET`` messages that ``_socket_event`` turns into the ``on_socket_*``
hooks, run like any handler (they may be ``async``). Socket ids are ints,
unique within a node; any service may write to or close any socket id, but
only its owner (the service that opened or accepted it, or was handed it by
:meth:`SocketAPI.socket_transfer`) hears its events.

Every verb but ``listen``/``connect`` carries a ``socket_`` prefix: ``write``
and ``close`` are common handler names (the built-in ``.logger`` exposes
``write``) and a subclass defining one would silently hide the socket verb.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

from ..core.host import RUNNING, STARTING
from ..core.servicecore import ServiceCore
from ..core.suspend import suspend
from ..errors import CallTimeout, SocketError
from ..message import SOCKET
from .thread import SocketThread

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

    from .._lifecycle import Lifecycle
    from .._router import Router

__all__ = ["SocketAPI", "Sockets"]


class Sockets:
    """The node's socket thread, started on first use and stopped with the node."""

    def __init__(
        self, router: Router, lifecycle: Lifecycle, on_start: Callable[[SocketThread], None]
    ) -> None:
        self._router = router
        self._lifecycle = lifecycle
        self._on_start = on_start  # registers the thread for the node's stop
        self._thread: SocketThread | None = None
        self._lock = threading.Lock()

    def get(self) -> SocketThread:
        """The socket thread, started now if this is the first use."""
        st = self._thread
        if st is not None:
            return st
        with self._lock:
            if self._thread is None:
                st = SocketThread(self._router, self._lifecycle)
                st.start()
                self._on_start(st)
                self._thread = st
            return self._thread

    def started(self) -> SocketThread | None:
        """The socket thread if it runs, without starting it."""
        return self._thread


class _HasSockets(Protocol):
    @property
    def sockets(self) -> Sockets: ...


class SocketAPI(ServiceCore):
    """TCP sockets for services. Every method is safe on any worker and never blocks.

    Example, a line echo server::

        class Echo(Service):
            def on_start(self, port):
                self.lid = self.listen("127.0.0.1", port)

            def on_socket_data(self, sock_id, data):
                self.socket_write(sock_id, data)
    """

    _parts: _HasSockets  # node._parts.Parts, bound by node.service.Service._bind

    @property
    def _sockets(self) -> Sockets:
        return self._parts.sockets

    # -- the verbs ------------------------------------------------------------------------

    def listen(
        self, host: str, port: int, backlog: int = 128, tls: ssl.SSLContext | None = None
    ) -> int:
        """Listen on ``host:port`` (``port=0``: any free port, see :meth:`socket_address`).

        Returns the listening socket's id; accepted connections arrive as
        ``on_socket_accept(listen_id, sock_id, addr)`` and start reading at
        once. With ``tls`` (a server-side ``ssl.SSLContext``) each connection
        does a TLS handshake first, on the socket thread; ``on_socket_data``
        carries the decrypted bytes and ``socket_write`` encrypts. Raises
        ``SocketError`` (address in use, bad address).
        """
        st = self._sockets.get()
        try:
            return st.listen(self.handle, host, port, backlog, tls)
        except OSError as exc:
            raise SocketError(f"listen {host}:{port}: {exc}") from exc

    async def connect(self, host: str, port: int, timeout: float | None = None) -> int:
        """Open a TCP connection; returns its socket id once connected.

        Raises ``SocketError`` (refused, unreachable, or not connected within
        ``timeout`` seconds, default the node's ``call_timeout``; ``0`` waits
        for ever).
        """
        st = self._sockets.get()
        sid = st.new_id()
        t = self._host.call_timeout if timeout is None else timeout
        try:
            got: int = await suspend(
                self, lambda s: st.connect(self.handle, s, sid, host, port), t or None,
                lambda s: st.close(sid, True),  # still connecting (or given up): abandon it
            )
        except CallTimeout:
            raise SocketError(f"connect {host}:{port}: timed out after {t}s") from None
        return got

    def socket_write(self, sock_id: int, data: bytes) -> None:
        """Queue ``data`` for sending; returns at once (the socket thread buffers it).

        Past the high-water mark (1 MiB) the owner gets ``on_socket_warning``.
        Writing to a closed socket does nothing: its close event has told the owner.
        """
        self._sockets.get().write(sock_id, data)

    def socket_close(self, sock_id: int, force: bool = False) -> None:
        """Close a socket after its queued writes are sent (at once with ``force``).

        The owner gets ``on_socket_close(sock_id, "closed")``.
        """
        self._sockets.get().close(sock_id, force)

    def socket_pause(self, sock_id: int) -> None:
        """Stop reading ``sock_id`` (backpressure: the peer's writes stall in TCP)."""
        self._sockets.get().set_paused(sock_id, True)

    def socket_resume(self, sock_id: int) -> None:
        """Start reading ``sock_id`` again after :meth:`socket_pause`."""
        self._sockets.get().set_paused(sock_id, False)

    def socket_transfer(self, sock_id: int, handle: int) -> None:
        """Make ``handle`` (a service on this node) the owner of ``sock_id``'s events."""
        self._sockets.get().transfer(sock_id, handle)

    def socket_address(self, sock_id: int) -> tuple[str, int] | None:
        """The bound address of a listening socket, or the peer of a connection."""
        addr = self._sockets.get().addresses.get(sock_id)
        return None if addr is None else (str(addr[0]), int(addr[1]))

    # -- hooks (override) --------------------------------------------------------------------

    def on_socket_accept(self, listen_id: int, sock_id: int, addr: tuple[str, int]) -> Any:
        """A connection arrived on ``listen_id``. The default closes it: nobody serves it."""
        self.socket_close(sock_id, force=True)

    def on_socket_data(self, sock_id: int, data: bytes) -> Any:
        """Bytes arrived on ``sock_id`` (any chunking: TCP is a stream)."""

    def on_socket_close(self, sock_id: int, reason: str) -> Any:
        """``sock_id`` is closed: ``"eof"`` (peer), ``"closed"`` (by a service),
        ``"error: ..."`` (an OSError). Sent exactly once per socket."""

    def on_socket_warning(self, sock_id: int, buffered: int) -> Any:
        """``buffered`` bytes wait to be sent on ``sock_id`` (past the high-water mark,
        doubling each time); ``0`` when the buffer has drained again."""
        if buffered:
            self._host.log(self.handle, "warning", f"socket {sock_id}: {buffered} bytes buffered")

    # -- dispatch ---------------------------------------------------------------------------

    def _socket_event(self, session: int, payload: Any) -> None:
        if self._state != RUNNING:
            if self._state == STARTING:  # held with CALL/SEND until on_start has finished
                self._core._defer((0, session, SOCKET, payload))
            else:
                self._host.count_drop("socket-dead-service")
            return
        event = payload[0]
        if event == "data":
            self._run_callable(self.on_socket_data, payload[1:], "on_socket_data")
        elif event == "accept":
            self._run_callable(self.on_socket_accept, payload[1:], "on_socket_accept")
        elif event == "close":
            self._run_callable(self.on_socket_close, payload[1:], "on_socket_close")
        elif event == "warning":
            self._run_callable(self.on_socket_warning, payload[1:], "on_socket_warning")
        else:
            self._host.count_drop("socket-unknown-event")
