"""``.gate``: a TCP gateway with one agent service per client (skynet's gate + netpack).

The gate owns the listening socket and every client connection. It cuts the
byte stream into frames — a 2-byte big-endian length then that many bytes
(``framing="length"``, skynet's netpack), or newline-terminated lines
(``framing="line"``, for ``nc`` and telnet) — and sends each frame to the
client's agent as the message ``gate_client(frame)``. An agent answers with
:meth:`Agent.send_client`, which writes straight to the socket thread.

Protection, each costing only the offending client its connection (one log
line each): a frame longer than ``max_frame``; no complete frame for
``idle_timeout`` seconds (half-open peers and slowloris dribblers alike);
more than ``max_clients`` connections; an agent's ``on_client`` raising
(garbage); not reading the replies (1 MiB waiting in the socket thread).
While an agent's mailbox holds more than ``mailbox_limit`` messages its
client is not read (TCP pushes back on the client).

Example::

    class Echo(Agent):
        def on_client(self, data):
            self.send_client(data)

    gate = node.newservice(Gate, Echo, "127.0.0.1", 0, {"max_frame": 1024}, name=".gate")
    host, port = node.call(gate, "address")
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from ..core.runner import ServiceExit
from ..service import Service, expose

__all__ = ["DEFAULTS", "Agent", "Gate", "pack"]

DEFAULTS: dict[str, Any] = {
    "framing": "length",  # "length" (2-byte big-endian prefix) or "line"
    "max_frame": 8192,  # bytes in one frame (a line, for framing="line")
    "max_clients": 10000,
    "max_per_address": 0,  # connections from one IP address (0: no limit)
    "idle_timeout": 60.0,  # seconds without a complete frame
    "mailbox_limit": 256,  # agent backlog above which its client is not read
    "agent_args": [],  # extra arguments for the agent's on_connect
}

BACKPRESSURE_TICK = 0.005  # how often paused clients are looked at


def pack(data: bytes) -> bytes:
    """One netpack frame: ``data`` behind its 2-byte big-endian length.

    Raises ``ValueError`` past 65535 bytes.

    >>> pack(b"hi")
    b'\\x00\\x02hi'
    """
    n = len(data)
    if n > 0xFFFF:
        raise ValueError(f"frame of {n} bytes does not fit a 2-byte length")
    return n.to_bytes(2, "big") + data


class _Client:
    """One connection as the gate sees it. Owner: the gate service."""

    __slots__ = ("addr", "agent", "buf", "last_frame", "paused", "pending", "sid")

    def __init__(self, sid: int, addr: tuple[str, int], now: float) -> None:
        self.sid = sid
        self.addr = addr
        self.agent = 0  # 0 until the agent's on_start finished
        self.buf = bytearray()  # Invariant: holds no complete frame between messages
        # Frames read but not yet given to the agent: it does not exist yet, or is behind.
        self.pending: list[bytes] = []
        self.last_frame = now
        self.paused = False


class Gate(Service):
    """The gateway service; start it with ``newservice(Gate, agent, host, port, options)``.

    ``agent`` is an :class:`Agent` subclass or ``"module:Class"``; ``options``
    override :data:`DEFAULTS`. ``on_start`` raises ``SocketError`` when it
    cannot listen and ``ValueError`` for an unknown option.
    """

    def on_start(
        self,
        agent: type[Agent] | str,
        host: str = "127.0.0.1",
        port: int = 0,
        options: dict[str, Any] | None = None,
    ) -> None:
        opts = dict(DEFAULTS)
        unknown = set(options or ()) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown gate options: {sorted(unknown)}")
        opts.update(options or {})
        if opts["framing"] not in ("length", "line"):
            raise ValueError(f"framing must be 'length' or 'line', not {opts['framing']!r}")
        self.agent_cls = agent
        self.framing: str = opts["framing"]
        self.max_frame: int = min(int(opts["max_frame"]), 0xFFFF)
        self.max_clients: int = opts["max_clients"]
        self.max_per_address: int = opts["max_per_address"]
        self.idle_timeout: float = opts["idle_timeout"]
        self.mailbox_limit: int = opts["mailbox_limit"]
        self.agent_args: list[Any] = list(opts["agent_args"])
        self.clients: dict[int, _Client] = {}
        self.by_agent: dict[int, int] = {}  # agent handle -> sock id
        self.rejected = 0
        self.ticking = False  # Invariant: True while a backpressure tick is scheduled
        self.lid = self.listen(host, port)
        self.timeout(max(self.idle_timeout / 4, 0.05), self._idle_tick)

    def on_stop(self) -> None:
        self.socket_close(self.lid, force=True)
        for c in self.clients.values():
            self.socket_close(c.sid)

    # -- exposed --------------------------------------------------------------------------

    @expose
    def address(self) -> tuple[str, int] | None:
        """The ``(host, port)`` the gate listens on."""
        return self.socket_address(self.lid)

    @expose
    def stat(self) -> dict[str, int]:
        """Clients connected, clients paused for backpressure, connections refused."""
        paused = sum(1 for c in self.clients.values() if c.paused)
        return {"clients": len(self.clients), "paused": paused, "rejected": self.rejected}

    @expose
    def kick(self, sock_id: int) -> bool:
        """Close a client's connection (its agent gets ``on_disconnect("closed")``)."""
        if sock_id not in self.clients:
            return False
        self.socket_close(sock_id)
        return True

    # -- socket events --------------------------------------------------------------------

    async def on_socket_accept(self, listen_id: int, sock_id: int, addr: tuple[str, int]) -> None:
        if len(self.clients) >= self.max_clients:
            self.rejected += 1
            self._bad(sock_id, addr, f"connection limit {self.max_clients} reached")
            return
        if self.max_per_address and sum(
            1 for other in self.clients.values() if other.addr[0] == addr[0]
        ) >= self.max_per_address:
            self.rejected += 1
            self._bad(sock_id, addr, f"{self.max_per_address} connections from {addr[0]} already")
            return
        c = self.clients[sock_id] = _Client(sock_id, addr, self.now())
        try:
            handle = await self.newservice(
                self.agent_cls, self.handle, sock_id, addr, self.framing, *self.agent_args
            )
        except Exception as exc:
            self.clients.pop(sock_id, None)
            self._bad(sock_id, addr, f"agent failed to start: {exc}")
            return
        if self.clients.get(sock_id) is not c:  # the client left while its agent started
            self.kill(handle)
            return
        c.agent = handle
        self.by_agent[handle] = sock_id
        self.monitor(handle)
        self._feed(c)

    def on_socket_data(self, sock_id: int, data: bytes) -> None:
        c = self.clients.get(sock_id)
        if c is None:
            return  # closed by us; a few chunks may still have been on their way
        buf = c.buf
        buf += data
        frames: list[bytes] = []
        if self.framing == "length":
            while len(buf) >= 2:
                n = buf[0] << 8 | buf[1]
                if n > self.max_frame:
                    self._bad(sock_id, c.addr, f"frame of {n} bytes > max_frame {self.max_frame}")
                    return
                if len(buf) < n + 2:
                    break
                frames.append(bytes(buf[2 : n + 2]))
                del buf[: n + 2]
        else:
            while (i := buf.find(b"\n")) >= 0:
                frames.append(bytes(buf[:i]).rstrip(b"\r"))
                del buf[: i + 1]
            if len(buf) > self.max_frame:
                self._bad(sock_id, c.addr, f"line longer than max_frame {self.max_frame}")
                return
        if not frames:
            return
        c.last_frame = self.now()
        if c.agent and not c.pending and not c.paused and self._backlog(c) < self.mailbox_limit:
            for frame in frames:  # the common case: straight to the agent
                self.send(c.agent, "gate_client", frame)
            if self._backlog(c) > self.mailbox_limit:
                self._feed(c)
            return
        c.pending.extend(frames)
        if c.agent:
            self._feed(c)

    def on_socket_close(self, sock_id: int, reason: str) -> None:
        if sock_id == self.lid:
            self.log(f"gate listener closed: {reason}", "error")
            return
        c = self.clients.pop(sock_id, None)
        if c is not None and c.agent:
            self.by_agent.pop(c.agent, None)
            self.send(c.agent, "gate_disconnect", reason)

    def on_socket_warning(self, sock_id: int, buffered: int) -> None:
        c = self.clients.get(sock_id)
        if c is not None and buffered:
            self._bad(sock_id, c.addr, f"not reading its replies ({buffered} bytes waiting)")

    def on_down(self, handle: int, reason: str) -> None:
        sid = self.by_agent.pop(handle, None)
        if sid is not None and sid in self.clients:
            self.socket_close(sid)  # the agent ended on its own: its client goes too

    # -- protection -----------------------------------------------------------------------

    def _bad(self, sock_id: int, addr: tuple[str, int], why: str) -> None:
        """Close one misbehaving client, with one log line."""
        self.log(f"closing client {addr[0]}:{addr[1]} (socket {sock_id}): {why}", "warning")
        self.socket_close(sock_id, force=True)

    def _backlog(self, c: _Client) -> int:
        svc = self._services.get(c.agent)
        return svc.queued() if svc is not None else 0

    def _feed(self, c: _Client) -> None:
        """Hand held frames to the agent while its backlog allows; pause reading otherwise.

        Frames already read when the pause takes effect wait here, so the agent's
        mailbox stays near ``mailbox_limit`` whatever the client sends.
        """
        room = self.mailbox_limit - self._backlog(c)
        if c.pending and room > 0:
            batch, c.pending = c.pending[:room], c.pending[room:]
            for frame in batch:
                self.send(c.agent, "gate_client", frame)
        if c.pending or self._backlog(c) > self.mailbox_limit:
            if not c.paused:
                c.paused = True
                self.socket_pause(c.sid)
                if not self.ticking:
                    self.ticking = True
                    self.timeout(BACKPRESSURE_TICK, self._resume_tick)
        elif c.paused and self._backlog(c) <= self.mailbox_limit // 2:
            c.paused = False
            c.last_frame = self.now()  # waiting on its agent is not the client's idleness
            self.socket_resume(c.sid)

    def _resume_tick(self) -> None:
        still = False
        for c in list(self.clients.values()):
            if c.paused:
                self._feed(c)
                still = still or c.paused
        self.ticking = still
        if still:
            self.timeout(BACKPRESSURE_TICK, self._resume_tick)

    def _idle_tick(self) -> None:
        limit = self.now() - self.idle_timeout
        for c in list(self.clients.values()):
            if c.last_frame < limit and not c.paused:
                what = "partial frame" if c.buf else "no data"
                self._bad(c.sid, c.addr, f"idle for {self.idle_timeout}s ({what})")
                c.last_frame = float("inf")  # one log line, even if the close takes a tick
        self.timeout(max(self.idle_timeout / 4, 0.05), self._idle_tick)


class Agent(Service):
    """One client of a :class:`Gate`. Override ``on_connect``, ``on_client``, ``on_disconnect``.

    The gate starts it with ``(gate, sock_id, addr, framing, *agent_args)``;
    those are available as ``self.gate``, ``self.sock_id``, ``self.addr``.
    Defining ``on_start`` in a subclass raises ``TypeError``: use ``on_connect``.
    If ``on_client`` raises, the client is closed with one log line. When
    the client goes, ``on_disconnect(reason)`` runs and the agent exits.

    Example::

        class Chat(Agent):
            def on_connect(self, motd):
                self.send_client(motd.encode())

            def on_client(self, data):
                self.send_client(b"you said: " + data)
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "on_start" in vars(cls):
            raise TypeError(f"{cls.__name__}: override on_connect, not on_start "
                            "(the gate starts an agent with its own arguments)")

    def on_start(
        self, gate: int, sock_id: int, addr: tuple[str, int], framing: str, *args: Any
    ) -> Any:
        self.gate = gate
        self.sock_id = sock_id
        self.addr = (str(addr[0]), int(addr[1]))
        self.framing = framing
        return self.on_connect(*args)  # a coroutine if on_connect is async: awaited by the node

    # -- hooks (override) -----------------------------------------------------------------

    def on_connect(self, *args: Any) -> Any:
        """The client is connected (may be ``async``); ``args`` are the gate's ``agent_args``."""

    def on_client(self, data: bytes) -> Any:
        """One frame from the client (may be ``async``). Raise to drop the client."""

    def on_disconnect(self, reason: str) -> Any:
        """The client is gone (``"eof"``, ``"closed"``, ``"error: ..."``); the agent exits next."""

    # -- verbs ----------------------------------------------------------------------------

    def send_client(self, data: bytes) -> None:
        """Send one frame to the client (framed like the gate reads: length or line)."""
        if self.framing == "length":
            self.socket_write(self.sock_id, pack(data))
        else:
            self.socket_write(self.sock_id, data if data.endswith(b"\n") else data + b"\n")

    def close_client(self) -> None:
        """Close the client's connection after what was sent; ``on_disconnect`` follows."""
        self.socket_close(self.sock_id)

    # -- messages from the gate -------------------------------------------------------------

    @expose
    def gate_client(self, data: bytes) -> None:
        """A frame from the gate (internal)."""
        try:
            result = self.on_client(data)
        except ServiceExit:
            raise
        except Exception as exc:
            self._drop_client(exc)
            return
        if isinstance(result, Coroutine):
            self.fork(self._guard, result)

    @expose
    async def gate_disconnect(self, reason: str) -> None:
        """The gate lost the client (internal): run ``on_disconnect``, then exit."""
        try:
            result = self.on_disconnect(reason)
            if isinstance(result, Coroutine):
                await result
        finally:
            self.exit()

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception as exc:
            self._drop_client(exc)

    def _drop_client(self, exc: Exception) -> None:
        self.log(f"closing client {self.addr[0]}:{self.addr[1]}: on_client raised "
                 f"{type(exc).__name__}: {exc}", "warning")
        self.socket_close(self.sock_id, force=True)
