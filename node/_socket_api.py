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
from typing import TYPE_CHECKING, Any

from ._runner import RUNNING, STARTING
from ._socket_thread import SocketThread
from ._traps import Wait
from .errors import CallTimeout, SocketError
from .message import CALL_TIMEOUT, SOCKET

if TYPE_CHECKING:
    from ._runner import ServiceCore
    from .node import Node

    _Base = ServiceCore
else:
    _Base = object

__all__ = ["SocketAPI", "sockets_of"]

_threads: dict[int, SocketThread] = {}  # id(node) -> its socket thread, while it runs
_threads_lock = threading.Lock()


def sockets_of(node: Node) -> SocketThread:
    """The node's socket thread, started (and registered with the node) on first use."""
    st = _threads.get(id(node))
    if st is not None and st.node is node:
        return st
    with _threads_lock:
        st = _threads.get(id(node))
        if st is None or st.node is not node:
            st = SocketThread(node)
            st.on_stop = _forget
            _threads[id(node)] = st
            st.start()
            node.add_component(st)
    return st


def _forget(st: SocketThread) -> None:
    with _threads_lock:
        if _threads.get(id(st.node)) is st:
            del _threads[id(st.node)]


class SocketAPI(_Base):
    """TCP sockets for services. Every method is safe on any worker and never blocks.

    Example, a line echo server::

        class Echo(Service):
            def on_start(self, port):
                self.lid = self.listen("127.0.0.1", port)

            def on_socket_data(self, sock_id, data):
                self.socket_write(sock_id, data)
    """

    # -- the verbs ------------------------------------------------------------------------

    def listen(self, host: str, port: int, backlog: int = 128) -> int:
        """Listen on ``host:port`` (``port=0``: any free port, see :meth:`socket_address`).

        Returns the listening socket's id; accepted connections arrive as
        ``on_socket_accept(listen_id, sock_id, addr)`` and start reading at
        once. Raises ``SocketError`` (address in use, bad address).
        """
        st = sockets_of(self._node)
        try:
            return st.listen(self.handle, host, port, backlog)
        except OSError as exc:
            raise SocketError(f"listen {host}:{port}: {exc}") from exc

    async def connect(self, host: str, port: int, timeout: float | None = None) -> int:
        """Open a TCP connection; returns its socket id once connected.

        Raises ``SocketError`` (refused, unreachable, or not connected within
        ``timeout`` seconds, default the node's ``call_timeout``; ``0`` waits
        for ever).
        """
        st = sockets_of(self._node)
        self._session = s = self._session + 1
        sid = st.new_id()
        st.connect(self.handle, s, sid, host, port)
        t = self._node.call_timeout if timeout is None else timeout
        if t > 0:
            self._timers[s] = self._node._timer.add(t, self.handle, s, CALL_TIMEOUT)
        try:
            got: int = await Wait(s)
        except CallTimeout:
            st.close(sid, True)  # still connecting: abandon it
            raise SocketError(f"connect {host}:{port}: timed out after {t}s") from None
        return got

    def socket_write(self, sock_id: int, data: bytes) -> None:
        """Queue ``data`` for sending; returns at once (the socket thread buffers it).

        Past the high-water mark (1 MiB) the owner gets ``on_socket_warning``.
        Writing to a closed socket does nothing: its close event has told the owner.
        """
        sockets_of(self._node).write(sock_id, data)

    def socket_close(self, sock_id: int, force: bool = False) -> None:
        """Close a socket after its queued writes are sent (at once with ``force``).

        The owner gets ``on_socket_close(sock_id, "closed")``.
        """
        sockets_of(self._node).close(sock_id, force)

    def socket_pause(self, sock_id: int) -> None:
        """Stop reading ``sock_id`` (backpressure: the peer's writes stall in TCP)."""
        sockets_of(self._node).set_paused(sock_id, True)

    def socket_resume(self, sock_id: int) -> None:
        """Start reading ``sock_id`` again after :meth:`socket_pause`."""
        sockets_of(self._node).set_paused(sock_id, False)

    def socket_transfer(self, sock_id: int, handle: int) -> None:
        """Make ``handle`` (a service on this node) the owner of ``sock_id``'s events."""
        sockets_of(self._node).transfer(sock_id, handle)

    def socket_address(self, sock_id: int) -> tuple[str, int] | None:
        """The bound address of a listening socket, or the peer of a connection."""
        addr = sockets_of(self._node).addresses.get(sock_id)
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
            self._node._log(self.handle, "warning", f"socket {sock_id}: {buffered} bytes buffered")

    # -- dispatch ---------------------------------------------------------------------------

    def _socket_event(self, session: int, payload: Any) -> None:
        if self._state != RUNNING:
            if self._state == STARTING:  # held with CALL/SEND until on_start has finished
                self._deferred.append((0, session, SOCKET, payload))
            else:
                self._node._count_drop("socket-dead-service")
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
            self._node._count_drop("socket-unknown-event")
