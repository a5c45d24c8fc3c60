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
client is not read (TCP pushes back on the client). With ``tls_cert`` /
``tls_key`` (PEM files) the gate speaks TLS. The bookkeeping is shared with
the WebSocket gate (:mod:`node.builtins._gatebase`).

Example::

    class Echo(Agent):
        def on_client(self, data):
            self.send_client(data)

    gate = node.newservice(Gate, Echo, "127.0.0.1", 0, {"max_frame": 1024}, name=".gate")
    host, port = node.call(gate, "address")
"""

from __future__ import annotations

from typing import Any, ClassVar

from ._agent import Agent, pack
from ._gatebase import BASE_DEFAULTS, Client, GateBase

__all__ = ["DEFAULTS", "Agent", "Gate", "pack"]

DEFAULTS: dict[str, Any] = {
    **BASE_DEFAULTS,
    "framing": "length",  # "length" (2-byte big-endian prefix) or "line"
    "max_frame": 8192,  # bytes in one frame (a line, for framing="line")
}


class _TcpClient(Client):
    __slots__ = ("buf",)

    def __init__(self, sid: int, addr: tuple[str, int], now: float) -> None:
        super().__init__(sid, addr, now)
        self.buf = bytearray()  # Invariant: holds no complete frame between messages


class Gate(GateBase):
    """The TCP gateway; start it with ``newservice(Gate, agent, host, port, options)``.

    ``agent`` is an :class:`Agent` subclass or ``"module:Class"``; ``options``
    override :data:`DEFAULTS`. ``on_start`` raises ``SocketError`` when it
    cannot listen and ``ValueError`` for an unknown option.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULTS

    def configure(self, opts: dict[str, Any]) -> None:
        if opts["framing"] not in ("length", "line"):
            raise ValueError(f"framing must be 'length' or 'line', not {opts['framing']!r}")
        self.framing = opts["framing"]
        self.max_frame: int = min(int(opts["max_frame"]), 0xFFFF)

    def new_client(self, sid: int, addr: tuple[str, int]) -> Client:
        return _TcpClient(sid, addr, self.now())

    def idle_what(self, c: Client) -> str:
        assert isinstance(c, _TcpClient)
        return "partial frame" if c.buf else "no data"

    def on_socket_data(self, sock_id: int, data: bytes) -> None:
        c = self.clients.get(sock_id)
        if c is None or c.closing:
            return  # closed by us; a few chunks may still have been on their way
        assert isinstance(c, _TcpClient)
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
        self.deliver(c, frames)
