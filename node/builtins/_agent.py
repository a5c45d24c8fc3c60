"""The agent of a gate's client, and how its messages are framed on the wire.

An :class:`Agent` serves one client of any gate (TCP or WebSocket). It writes
to its client from its own worker, straight to the socket thread, through an
encoder of its own (``ENCODERS[framing]()``); closing goes through the gate
(``kick``), so it follows the agent's writes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from ..core.host import ServiceExit
from ..service import Service, expose

__all__ = ["ENCODERS", "Agent", "Encoder", "pack"]

# What a message to the client becomes on the wire, per framing; one encoder per agent
# (made by the factory), used only on that agent's thread. ``wsgate`` adds "websocket".
Encoder = Callable[[bytes | str], bytes]
ENCODERS: dict[str, Callable[[], Encoder]] = {}


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


def _length(data: bytes | str) -> bytes:
    return pack(data.encode() if isinstance(data, str) else data)


def _line(data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return raw if raw.endswith(b"\n") else raw + b"\n"


ENCODERS["length"] = lambda: _length
ENCODERS["line"] = lambda: _line


class Agent(Service):
    """One client of a gate. Override ``on_connect``, ``on_client``, ``on_disconnect``.

    The gate starts it with ``(gate, sock_id, addr, framing, *agent_args)``;
    those are available as ``self.gate``, ``self.sock_id``, ``self.addr``,
    ``self.framing`` (``"length"``, ``"line"`` or ``"websocket"``). Defining
    ``on_start`` in a subclass raises ``TypeError``: use ``on_connect``. If
    ``on_client`` raises, the client is closed with one log line. When the
    client goes, ``on_disconnect(reason)`` runs and the agent exits.

    Messages: a TCP gate hands ``bytes``; a WebSocket gate hands ``str`` for a
    text message and ``bytes`` for a binary one. :meth:`send_client` takes
    either: over WebSocket ``str`` goes as text and ``bytes`` as binary; over
    TCP ``str`` is sent UTF-8 encoded. So one agent class serves both gates.

    Example::

        class Chat(Agent):
            def on_connect(self, motd):
                self.send_client(motd)

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
        self._encode = ENCODERS[framing]()
        self._dropped = False  # on_client raised: the rest of its messages are ignored
        return self.on_connect(*args)  # a coroutine if on_connect is async: awaited by the node

    # -- hooks (override) -----------------------------------------------------------------

    def on_connect(self, *args: Any) -> Any:
        """The client is connected (may be ``async``); ``args`` are the gate's ``agent_args``."""

    def on_client(self, data: Any) -> Any:
        """One message from the client, ``bytes`` or (WebSocket text) ``str``; may be
        ``async``. Raise to drop the client."""

    def on_disconnect(self, reason: str) -> Any:
        """The client is gone (``"eof"``, ``"closed"``, ``"error: ..."``, WebSocket
        ``"close 1000"``); the agent exits next."""

    # -- verbs ----------------------------------------------------------------------------

    def send_client(self, data: bytes | str) -> None:
        """Send one message to the client, framed as the gate reads (written from this
        agent's worker straight to the socket thread)."""
        self.socket_write(self.sock_id, self._encode(data))

    def close_client(self, code: int = 1000, reason: str = "") -> None:
        """Close the client's connection after what was sent; ``on_disconnect`` follows.

        ``code``/``reason`` go into a WebSocket close frame. The gate closes it
        (its messages from this agent are ordered after the writes before).
        """
        self.send(self.gate, "kick", self.sock_id, code, reason)

    # -- messages from the gate -------------------------------------------------------------

    @expose
    def gate_client(self, data: Any) -> None:
        """A message from the gate (internal)."""
        if self._dropped:
            return
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
        if self._dropped:
            return
        self._dropped = True
        self.log(f"closing client {self.addr[0]}:{self.addr[1]}: on_client raised "
                 f"{type(exc).__name__}: {exc}", "warning")
        self.send(self.gate, "kick", self.sock_id, 1008, "bad message", True)
