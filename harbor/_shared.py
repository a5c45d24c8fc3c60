"""State shared by caller threads and the harbor I/O thread, and the peer record."""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

import zmq

from harbor.transport import PeerInfo

# pyzmq's constants are enum members: ``events & zmq.POLLIN`` builds a Flag through
# enum's Python code (~2 us a frame on this machine). The per-frame paths use plain ints.
ZMQ_EVENTS: Final = int(zmq.EVENTS)
ZMQ_POLLIN: Final = int(zmq.POLLIN)
ZMQ_NOBLOCK: Final = int(zmq.NOBLOCK)


def readable(sock: zmq.Socket[Any]) -> bool:
    """Whether ``sock`` has a message to read now. Asked before a non-blocking recv:
    a recv that raises zmq.Again costs ~4x a successful one (building the exception),
    more than a small frame's checks."""
    events = sock.getsockopt(ZMQ_EVENTS)
    return isinstance(events, int) and bool(events & ZMQ_POLLIN)


@dataclass(eq=False)
class Shared:
    """State shared between caller threads and the I/O thread (plain GIL-atomic operations)."""

    # Owner: callers append, the I/O thread pops. Items: (node_id, dst_incarnation, encoded msg).
    out: deque[tuple[int, int, bytes]] = field(default_factory=deque)
    # Owner: callers append, the I/O thread pops. Items: ("peers", dict) | ("sub"|"unsub", topic)
    # | ("pub", topic, body).
    ctl: deque[tuple[Any, ...]] = field(default_factory=deque)
    # Owner: set True by the I/O thread just before it blocks; set False by whoever wakes it
    # (under wake_lock) or by the I/O thread after the poll. Invariant: a producer that
    # appends and then sees idle False can rely on the I/O thread checking the deques before
    # it blocks again (it sets idle True *before* looking at them).
    idle: bool = False
    wake_lock: threading.Lock = field(default_factory=threading.Lock)
    # Owner: any thread, only under wake_lock; None once the I/O thread has closed it.
    wake_tx: zmq.Socket[bytes] | None = None
    # Owner: set by stop(); read by the I/O thread.
    stopping: bool = False
    # Owner: the I/O thread adds (node id, incarnation) when it reports that peer down and
    # removes it when the peer leaves the peer set; send() only tests membership (GIL-atomic).
    # Keyed by incarnation so a new incarnation published by set_peers is alive at once.
    down: set[tuple[int, int]] = field(default_factory=set)
    # Owner: any thread, only under pending_lock. node id -> bytes of messages send() accepted
    # for it that the I/O thread has not yet handed to ZeroMQ or dropped.
    # Invariant: send() refuses a message that would take an entry over the backlog limit,
    # and every accepted message's bytes are subtracted exactly once (sent or dropped).
    pending: dict[int, int] = field(default_factory=dict)
    pending_lock: threading.Lock = field(default_factory=threading.Lock)
    backlog_full: int = 0  # Owner: send(), under pending_lock. Messages refused.
    # Owner: the I/O thread replaces the whole dict (copy-on-write); callers read it.
    # node id -> Peer whose PUSH socket is open: a caller may send to it directly, under
    # the peer's lock (ZmqTransport.send).
    direct: dict[int, Peer] = field(default_factory=dict)
    # Owner: the I/O thread. Frames callers sent directly to peers since removed.
    direct_gone: int = 0

    def release(self, node_id: int, nbytes: int) -> None:
        """The I/O thread sent or dropped ``nbytes`` of ``node_id``'s accepted messages."""
        with self.pending_lock:
            self.pending[node_id] -= nbytes

    def wake(self) -> None:
        """Wake the I/O thread if it is (about to be) blocked. A spurious wake-up is harmless."""
        with self.wake_lock:
            if self.idle and self.wake_tx is not None:
                self.idle = False
                # Again: the pipe is full of wake-ups already; one is enough.
                with contextlib.suppress(zmq.ZMQError):
                    self.wake_tx.send(b"", ZMQ_NOBLOCK)


@dataclass(eq=False)
class Peer:
    """One peer. Fields are owned by the I/O thread except ``push`` (under ``lock``) and
    the direct-send fields (callers, under ``lock``)."""

    node_id: int
    info: PeerInfo
    added_at: float
    # Held by whoever touches ``push``: the I/O thread (open, flush, close) or a caller
    # sending a frame directly. A ZeroMQ socket is never used by two threads at once.
    lock: threading.Lock = field(default_factory=threading.Lock)
    push: zmq.Socket[bytes] | None = None  # created on the first frame to this peer
    # Owner: callers, under ``lock``. Frames sent directly; perf_counter of the last
    # direct attempt (a caller sending faster than STREAM_GAP queues, for batching).
    direct_frames: int = 0
    last_direct: float = 0.0
    push_mon: zmq.Socket[bytes] | None = None
    push_opened: float = 0.0  # monotonic time the PUSH socket was opened (I/O thread)
    last_flush: float = 0.0  # perf_counter of the I/O thread's last frame to it (or open)
    sub: zmq.Socket[bytes] | None = None  # connected to its PUB while this node subscribes
    sub_mon: zmq.Socket[bytes] | None = None
    push_connected: bool = False
    sub_connected: bool = False
    # Invariant: on_peer_down is called at most once per (node_id, incarnation).
    down: bool = False
    # Frames ZeroMQ would not take yet (high-water mark): (frame, message count, message
    # bytes counted in Shared.pending), in order.
    backlog: deque[tuple[bytes, int, int]] = field(default_factory=deque)
