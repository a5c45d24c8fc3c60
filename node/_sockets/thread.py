"""The socket thread: one ``selectors`` loop that owns every TCP socket of a node.

Services never touch a socket. They hand the thread commands (write, close,
pause, resume, transfer, connect) through a deque plus a one-byte wake-up on
a socketpair; the thread turns every network event into a ``SOCKET`` message
to the socket's owner (or a REPLY/ERROR for a pending ``connect``). So no
worker ever blocks on the network, and one thread alone reads and writes each
socket (kazoo's ``zk_loop`` rule).

SOCKET payloads: ``("accept", listen_id, sock_id, addr)``, ``("data", sock_id,
bytes)``, ``("close", sock_id, reason)``, ``("warning", sock_id, buffered)``.

Invariants:
- every socket id gets exactly one ``close`` event, whoever closed it
  (peer, error, ``close()``), unless its owner no longer exists;
- events of one socket reach its owner in the order they happened;
- an ``OSError`` closes the one socket it came from, never the thread.

TLS: a listener given an ``ssl.SSLContext`` wraps each accepted socket
(``do_handshake_on_connect=False``) and runs the handshake here, non-blocking:
``do_handshake`` raises ``SSLWantRead``/``SSLWantWrite`` and the socket waits
for that readiness (kind ``"tls"``). ``accept`` is sent at TCP accept, so the
owner's connection limits and idle timers cover a handshake that never ends;
``data`` flows only once it finished; a failed handshake is a ``close`` with
``"error: TLS handshake: ..."`` (counted in ``tls_errors``). Decrypted bytes
can wait inside the ``SSLSocket`` where ``select`` does not see them, so a
read drains ``pending()`` and a resume reads at once when some are there.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from ..message import ERR_OTHER, ERROR, REPLY, SOCKET

if TYPE_CHECKING:
    from .._lifecycle import Lifecycle
    from .._router import Router

__all__ = ["HIGH_WATER", "SocketThread"]

HIGH_WATER = 1 << 20  # bytes buffered for one connection before the owner is warned
READ_SIZE = 1 << 16
SWEEP_EVERY = 1.0  # seconds between checks for sockets whose owner has ended
# A send that would block; for TLS also a record that needs the socket readable/writable first.
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

class _Conn:
    """One socket as the socket thread sees it. Owner: the socket thread."""

    __slots__ = (
        "addr", "closing", "connect_session", "id", "kind", "next_warn", "owner",
        "paused", "sock", "tls", "want", "wbuf", "wsize",
    )

    def __init__(self, sid: int, sock: socket.socket, owner: int, kind: str, addr: Any) -> None:
        self.id = sid
        self.sock = sock
        self.owner = owner
        self.kind = kind  # "listen", "conn", "connecting" or "tls" (handshake running)
        self.addr = addr
        self.wbuf: deque[memoryview] = deque()
        self.wsize = 0  # Invariant: sum of len() over wbuf
        self.next_warn = HIGH_WATER  # doubles at each warning, reset when drained
        self.paused = False
        self.closing = False  # close once wbuf is flushed
        self.connect_session = 0
        self.tls: ssl.SSLContext | None = None  # a listener's: wraps what it accepts
        self.want = selectors.EVENT_READ  # what a running TLS handshake waits for


class SocketThread:
    """Owns the node's sockets; see the module docstring for the protocol."""

    def __init__(self, router: Router, lifecycle: Lifecycle, high_water: int = HIGH_WATER) -> None:
        self._router = router
        self._lifecycle = lifecycle
        self.high_water = high_water
        self._ids = itertools.count(1)  # next() is atomic under the GIL: any thread may allocate
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._cmds: deque[tuple[Any, ...]] = deque()
        # Set by producers before the wake-up byte; cleared by the thread after reading the
        # bytes and before draining _cmds: a command is seen by that drain or sends a byte.
        self._signalled = False
        self._conns: dict[int, _Conn] = {}  # Owner: the socket thread
        self.addresses: dict[int, Any] = {}  # sock id -> local (listen) or peer address
        self._running = False
        self._thread: threading.Thread | None = None
        self.counts = {"accepted": 0, "bytes_in": 0, "bytes_out": 0, "errors": 0,
                       "tls_errors": 0}

    # -- any thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread."""
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="skymesh-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close every socket (pending writes are dropped) and join the thread. Idempotent."""
        if not self._running:
            return
        self._command(("stop",))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)

    def new_id(self) -> int:
        """A fresh socket id (never reused while the node runs)."""
        return next(self._ids)

    def listen(
        self, owner: int, host: str, port: int, backlog: int, tls: ssl.SSLContext | None = None
    ) -> int:
        """Bind and listen (non-blocking system calls) on the caller's thread; with
        ``tls``, every accepted connection speaks TLS (server side).

        Raises ``OSError`` (address in use, bad address); the caller types it.
        """
        sock = socket.create_server((host, port), backlog=backlog)
        sock.setblocking(False)
        sid = self.new_id()
        self.addresses[sid] = sock.getsockname()[:2]
        self._command(("listen", sid, sock, owner, tls))
        return sid

    def connect(self, owner: int, session: int, sid: int, host: str, port: int) -> None:
        """Start connecting; the owner gets REPLY ``sid`` or ERROR on ``session``."""
        self._command(("connect", sid, owner, session, host, port))

    def write(self, sid: int, data: bytes) -> None:
        """Queue ``data`` for ``sid``; silently dropped if the socket is closed."""
        self._command(("write", sid, data))

    def close(self, sid: int, force: bool) -> None:
        """Close ``sid`` after flushing its writes (or at once with ``force``)."""
        self._command(("close", sid, force))

    def set_paused(self, sid: int, paused: bool) -> None:
        """Stop or restart reading ``sid`` (the kernel buffers, then TCP pushes back)."""
        self._command(("pause", sid, paused))

    def transfer(self, sid: int, owner: int) -> None:
        """Deliver the events of ``sid`` to ``owner`` from now on."""
        self._command(("transfer", sid, owner))

    def count(self) -> int:
        """Open sockets (racy read, for stats)."""
        return len(self._conns)

    def _command(self, cmd: tuple[Any, ...]) -> None:
        self._cmds.append(cmd)
        if not self._signalled:
            self._signalled = True
            # OSError: the pair is full (a wake-up is pending anyway) or closed (stopped)
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")

    # -- the socket thread ------------------------------------------------------------------

    def _loop(self) -> None:
        next_sweep = time.monotonic() + SWEEP_EVERY
        try:
            while self._running:
                for key, mask in self._sel.select(SWEEP_EVERY):
                    conn: _Conn | None = key.data
                    if conn is None:
                        self._drain_wakeups()
                        self._run_commands()
                    elif self._conns.get(conn.id) is conn:
                        self._ready(conn, mask)
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + SWEEP_EVERY
                    self._sweep()
        finally:
            for conn in list(self._conns.values()):
                self._drop(conn, "node stopped", notify=False)
            self._sel.close()
            self._wake_r.close()
            self._wake_w.close()

    def _drain_wakeups(self) -> None:
        # Bytes first, then the flag: a producer that saw the flag set sent no byte, and
        # its command is in _cmds before we clear the flag, so the drain that follows sees it.
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        self._signalled = False

    def _run_commands(self) -> None:
        cmds = self._cmds
        while cmds:
            cmd = cmds.popleft()
            op = cmd[0]
            try:
                if op == "write":
                    conn = self._conns.get(cmd[1])
                    if conn is not None and not conn.closing:
                        self._queue_write(conn, cmd[2])
                elif op == "listen":
                    lconn = _Conn(cmd[1], cmd[2], cmd[3], "listen", self.addresses[cmd[1]])
                    lconn.tls = cmd[4]
                    self._add(lconn)
                elif op == "connect":
                    self._start_connect(*cmd[1:])
                elif op == "close":
                    self._close_cmd(cmd[1], cmd[2])
                elif op == "pause":
                    self._pause(cmd[1], cmd[2])
                elif op == "transfer":
                    conn = self._conns.get(cmd[1])
                    if conn is not None:
                        conn.owner = cmd[2]
                elif op == "stop":
                    self._running = False
            except Exception as exc:  # a bug here must not kill every socket of the node
                self._lifecycle.log_exc(0, f"socket command {op} failed", exc)

    def _add(self, conn: _Conn) -> None:
        self._conns[conn.id] = conn
        self._sel.register(conn.sock, self._interest(conn), conn)

    def _interest(self, conn: _Conn) -> int:
        if conn.kind == "connecting":
            return selectors.EVENT_WRITE
        if conn.kind == "tls":
            return conn.want
        mask = 0 if conn.paused or conn.closing else selectors.EVENT_READ
        if conn.wbuf:
            mask |= selectors.EVENT_WRITE
        return mask

    def _update(self, conn: _Conn) -> None:
        mask = self._interest(conn)
        key = self._sel.get_map().get(conn.sock)
        if mask == 0:
            if key is not None:
                self._sel.unregister(conn.sock)
        elif key is None:
            self._sel.register(conn.sock, mask, conn)
        elif key.events != mask:
            self._sel.modify(conn.sock, mask, conn)

    def _emit(self, conn: _Conn, payload: tuple[Any, ...]) -> None:
        self._router.post(conn.owner, (0, 0, SOCKET, payload))

    def _ready(self, conn: _Conn, mask: int) -> None:
        if conn.kind == "listen":
            self._accept(conn)
            return
        if conn.kind == "connecting":
            self._finish_connect(conn)
            return
        if conn.kind == "tls":
            self._handshake(conn)
            return
        if mask & selectors.EVENT_WRITE:
            self._flush(conn)
        if mask & selectors.EVENT_READ and self._conns.get(conn.id) is conn:
            self._read(conn)

    def _accept(self, lconn: _Conn) -> None:
        for _ in range(64):  # bounded: one busy listener must not starve the rest
            try:
                sock, addr = lconn.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: rest until the next sweep, say so once
                self.counts["errors"] += 1
                self._lifecycle.log(lconn.owner, "warning", f"accept on socket {lconn.id}: {exc}")
                lconn.paused = True  # else a still-readable listener spins this loop
                self._update(lconn)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            kind = "conn"
            if lconn.tls is not None:
                try:  # no I/O yet: the handshake runs in _handshake
                    sock = lconn.tls.wrap_socket(
                        sock, server_side=True, do_handshake_on_connect=False
                    )
                except OSError as exc:
                    self.counts["tls_errors"] += 1
                    self._lifecycle.log(lconn.owner, "warning", f"TLS wrap failed: {exc}")
                    sock.close()
                    continue
                kind = "tls"
            sid = self.new_id()
            peer = (addr[0], addr[1])
            self.addresses[sid] = peer
            self._add(_Conn(sid, sock, lconn.owner, kind, peer))
            self.counts["accepted"] += 1
            self._emit(lconn, ("accept", lconn.id, sid, peer))

    def _handshake(self, conn: _Conn) -> None:
        """One non-blocking step of a server-side TLS handshake."""
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            conn.want = selectors.EVENT_READ
        except ssl.SSLWantWriteError:
            conn.want = selectors.EVENT_WRITE
        except OSError as exc:  # ssl.SSLError included: bad client hello, no shared cipher, EOF
            self.counts["tls_errors"] += 1
            self._drop(conn, f"error: TLS handshake: {exc}")
            return
        else:
            conn.kind = "conn"  # writes queued meanwhile are flushed on the next write event
        self._update(conn)

    def _start_connect(self, sid: int, owner: int, session: int, host: str, port: int) -> None:
        try:
            # Numeric addresses resolve at once; a host name blocks this thread in DNS.
            family, stype, proto, _, addr = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
            sock = socket.socket(family, stype, proto)
        except OSError as exc:
            self._connect_failed(owner, session, f"connect {host}:{port}: {exc}")
            return
        sock.setblocking(False)
        conn = _Conn(sid, sock, owner, "connecting", (host, port))
        conn.connect_session = session
        err = sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._connect_failed(owner, session, f"connect {host}:{port}: {_strerror(err)}")
            return
        self._add(conn)

    def _finish_connect(self, conn: _Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._sel.unregister(conn.sock)
            del self._conns[conn.id]
            conn.sock.close()
            host, port = conn.addr
            self._connect_failed(conn.owner, conn.connect_session,
                                 f"connect {host}:{port}: {_strerror(err)}")
            return
        conn.kind = "conn"
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.addresses[conn.id] = conn.addr
        self._update(conn)
        self._router.post(conn.owner, (0, conn.connect_session, REPLY, conn.id))

    def _connect_failed(self, owner: int, session: int, text: str) -> None:
        self.counts["errors"] += 1
        self._router.post(owner, (0, session, ERROR, (ERR_OTHER, "SocketError", text, "")))

    def _read(self, conn: _Conn) -> None:
        sock = conn.sock
        try:
            data = sock.recv(READ_SIZE)
            # TLS: decrypted bytes of a record already read wait in the SSL object, where
            # select() cannot see them. Take them now (bounded, like one plain read).
            if data and isinstance(sock, ssl.SSLSocket):
                while len(data) < READ_SIZE and (left := sock.pending()):
                    data += sock.recv(min(left, READ_SIZE - len(data)))
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError as exc:
            self._drop(conn, f"error: {exc}")
            return
        if not data:
            self._drop(conn, "eof")
            return
        self.counts["bytes_in"] += len(data)
        self._emit(conn, ("data", conn.id, data))

    def _queue_write(self, conn: _Conn, data: bytes) -> None:
        if not data:
            return
        if conn.kind == "conn" and not conn.wbuf:
            try:  # the common case: the kernel takes it all, nothing is buffered
                n = conn.sock.send(data)
            except _WOULD_BLOCK:
                n = 0
            except OSError as exc:
                self._drop(conn, f"error: {exc}")
                return
            self.counts["bytes_out"] += n
            if n == len(data):
                return
            data = data[n:]
        conn.wbuf.append(memoryview(data))
        conn.wsize += len(data)
        if conn.wsize >= conn.next_warn:
            self._emit(conn, ("warning", conn.id, conn.wsize))
            while conn.next_warn <= conn.wsize:
                conn.next_warn *= 2
        self._update(conn)

    def _flush(self, conn: _Conn) -> None:
        buf = conn.wbuf
        while buf:
            try:
                n = conn.sock.send(buf[0])
            except _WOULD_BLOCK:  # TLS: retried later with the same buffer, as OpenSSL asks
                break
            except OSError as exc:
                self._drop(conn, f"error: {exc}")
                return
            self.counts["bytes_out"] += n
            conn.wsize -= n
            if n == len(buf[0]):
                buf.popleft()
            else:
                buf[0] = buf[0][n:]
                break
        if not buf:
            if conn.next_warn > self.high_water:  # it had warned: tell the owner it drained
                conn.next_warn = self.high_water
                self._emit(conn, ("warning", conn.id, 0))
            if conn.closing:
                self._drop(conn, "closed")
                return
        self._update(conn)

    def _close_cmd(self, sid: int, force: bool) -> None:
        conn = self._conns.get(sid)
        if conn is None:
            return
        if force or not conn.wbuf or conn.kind != "conn":
            if conn.kind == "connecting":
                self._connect_failed(conn.owner, conn.connect_session, "closed while connecting")
                self._drop(conn, "closed", notify=False)
            else:
                self._drop(conn, "closed")
            return
        conn.closing = True  # stop reading, flush, then close (see _flush)
        self._update(conn)

    def _pause(self, sid: int, paused: bool) -> None:
        conn = self._conns.get(sid)
        if conn is not None and conn.kind != "listen" and conn.paused != paused:
            conn.paused = paused
            if conn.kind == "conn":
                self._update(conn)
                sock = conn.sock
                if not paused and isinstance(sock, ssl.SSLSocket) and sock.pending():
                    self._read(conn)  # decrypted bytes select() will not report

    def _drop(self, conn: _Conn, reason: str, notify: bool = True) -> None:
        """Forget and close ``conn``; its owner hears ``close`` once (see invariants)."""
        if self._conns.pop(conn.id, None) is None:
            return
        self.addresses.pop(conn.id, None)
        if reason.startswith("error"):
            self.counts["errors"] += 1
        if conn.sock in self._sel.get_map():
            self._sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        if notify:
            self._emit(conn, ("close", conn.id, reason))

    def _sweep(self) -> None:
        """Close the sockets of services that have ended (nobody will ever read them);
        let listeners that rested after an accept error listen again."""
        services = self._router.services
        for conn in list(self._conns.values()):
            if conn.owner not in services:
                self._drop(conn, "owner gone", notify=False)
            elif conn.kind == "listen" and conn.paused:  # resting after an accept error
                conn.paused = False
                self._update(conn)


def _strerror(err: int) -> str:
    return f"[Errno {err}] {os.strerror(err)}"
