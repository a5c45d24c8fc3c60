"""The inbound side of the harbor: reading PULL, checking frames, parking, delivering.

Whoever holds :attr:`Inbound.lock` owns the PULL socket (a ZeroMQ socket is
never used by two threads at once): the harbor I/O thread, or -- when the
node lets its idle workers wait on the harbor (:meth:`Inbound.wait`) -- an
idle worker, so the thread that receives a frame is the thread that runs its
messages (no hand-off from the I/O thread to a worker).

An inbound frame is checked in order of cost: its size (ZeroMQ's MAXMSGSIZE
already cut longer ones), its connection's ZAP User-Id against the node id
its header claims (with credentials), the header against the peer set, and
only then are its messages decoded (with msgpack limits and the wire policy).

Order per sending node: frames are read and delivered by one thread at a
time (the lock), and parked frames of a node are delivered by the lock's
holder before any later frame of that node is read (:meth:`_catch_up`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Final

import zmq

from harbor._droplog import DropLog
from harbor._shared import ZMQ_NOBLOCK, readable
from harbor.errors import FrameError
from harbor.keys import CLUSTER
from harbor.transport import DeliverFn
from harbor.wire import Header, WirePolicy, check_header, decode_frame, peek_header

PULL_PER_TURN: Final = 256  # frames read per turn (or per idle-worker wait) at most
PARK_LIMIT: Final = 256  # frames parked for not-yet-known nodes ...
PARK_BYTES: Final = 32 * 1024 * 1024  # ... and their bytes
# A read stops after this long, so a turn of the I/O thread (its tick) or a worker's
# wait (its own queue) is never held long by a flood.
READ_BUDGET: Final = 0.02  # seconds
WAKE_LEN: Final = 16  # bytes of a wake-up frame (a random token)


class Inbound:
    """PULL and everything that happens to a frame read from it. See the module docstring.

    Also the harbor's side of a node's idle wait: :meth:`wait` and :meth:`wake`
    match ``node.core.scheduler.IdleWait`` (structurally; harbor never imports node).
    """

    def __init__(
        self,
        pull: zmq.Socket[bytes],
        wake_tx: zmq.Socket[bytes],
        *,
        node_id: int,
        incarnation: int,
        deliver: DeliverFn,
        droplog: DropLog,
        max_frame: int,
        policy: WirePolicy | None,
        join_grace: float,
    ) -> None:
        # Immutable after __init__.
        self.pull = pull
        self.node_id = node_id
        self.incarnation = incarnation
        self.deliver = deliver
        self.drops = droplog
        self.counts = droplog.counts
        self.max_frame = max_frame
        self.policy = policy
        self.join_grace = join_grace
        # Held by the one thread that may touch PULL, the wake-up receiver, the parking and
        # the counters frames_in/msgs_in now. Never held across a blocking call other than
        # the poll in wait().
        self.lock = threading.Lock()
        # A wake-up is a frame on PULL itself, from an inproc PUSH connected to an inproc
        # endpoint PULL also binds: a waiting worker blocks in one recv (no poller), like
        # raw pyzmq. The frame is this random token, never a valid actor frame (a frame
        # of exactly WAKE_LEN bytes equal to it is skipped; any other is checked).
        self._wake_tx = wake_tx
        self.wake_token = os.urandom(WAKE_LEN)
        self._rcvtimeo = -1  # Owner: the lock holder. PULL's RCVTIMEO as last set.
        # Owner: wake() and wait(), under _wake_lock. True while a worker is (about to be)
        # blocked in wait()'s poll: a wake-up is only sent then.
        self._wake_lock = threading.Lock()
        self._waiting = False
        # Owner: under _wake_lock. A wake() that came while no wait() was blocked: the next
        # wait() does not block (a wake-up is never lost between a worker's last look at
        # its queue and its poll).
        self._pending = False
        self.closed = False  # Owner: close(), under _wake_lock.
        # Owner: the I/O thread replaces them (one reference store each, GIL-atomic); read by
        # the lock holder. members: node id -> incarnation; user_ids: the ZAP User-Ids a
        # frame may arrive under (None: no credentials); version bumps with members.
        self.members: dict[int, int] = {}
        self.user_ids: frozenset[str] | None = None
        self.version = 0
        # Owner: the lock holder. Frames from a node id not (yet) in the peer set, held up
        # to join_grace, raw: (parked at, header, data). Invariant: at most PARK_LIMIT
        # entries and PARK_BYTES bytes (parked_bytes); each is delivered or dropped once.
        self.parked: list[tuple[float, Header, bytes]] = []
        self.parked_bytes = 0
        self._seen_version = 0
        # Monotonic time a worker last asked for, took or left PULL (0: never). Written by
        # the waiting worker (one float store, GIL-atomic); read by the I/O thread.
        self.last_worker = 0.0
        self.workers = False  # set once, before start: idle workers read PULL
        # Owner: the I/O thread (one bool store). True while it sleeps a second at a time
        # (nothing happened lately): a worker that takes a frame then calls poke(), so
        # the I/O thread is back to its 0.1 s turns -- and to its fallback read of PULL
        # should every worker stay busy -- at once, not up to a second later.
        self.io_deep = False
        self.poke: Callable[[], None] = lambda: None

    # -- the idle worker's side (node.core.scheduler.IdleWait) ---------------------------

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for a frame or :meth:`wake`; run what arrived.

        Returns True after waiting, False at once once closed (the caller waits
        its own way). Frames read are delivered here, in the caller's thread:
        their messages are in their mailboxes on return.
        """
        # Said before taking the lock: the I/O thread, which takes PULL in 5 ms turns while
        # no worker has lately, then stops re-taking it (else it could win the lock at
        # every turn and starve us). Besides one idle worker (the scheduler lets one wait
        # at a time) only the I/O thread takes the lock, never across a blocking call.
        self.last_worker = time.monotonic()
        self.lock.acquire()
        try:
            self.last_worker = time.monotonic()
            with self._wake_lock:
                if self.closed:
                    return False
                ms = 0 if self._pending else int(timeout * 1000)
                self._pending = False
                self._waiting = True
            pull = self.pull
            if ms != self._rcvtimeo:
                pull.setsockopt(zmq.RCVTIMEO, ms)
                self._rcvtimeo = ms
            try:
                zf: zmq.Frame | None = pull.recv(0, copy=False)
            except zmq.Again:  # timed out (or a wake-up was pending: RCVTIMEO 0)
                zf = None
            finally:
                with self._wake_lock:
                    self._waiting = False
            now = time.monotonic()
            self.last_worker = now
            self._catch_up(now)
            if zf is not None:
                if self.io_deep:
                    self.io_deep = False
                    self.poke()
                self.on_frame(zf)
                self.read(now)  # and whatever else is queued, within the bounds
        except zmq.ZMQError:  # the transport closed PULL under a late waiter
            pass
        finally:
            self.lock.release()
        return True

    def wake(self) -> None:
        """End a :meth:`wait` in progress (or the next one at once). Any thread."""
        with self._wake_lock:
            if self.closed:
                return
            if not self._waiting:
                self._pending = True
                return
            self._waiting = False
            # ZMQError: full of wake-ups already, one is enough
            with contextlib.suppress(zmq.ZMQError):
                self._wake_tx.send(self.wake_token, ZMQ_NOBLOCK)

    # -- reading (the lock holder) --------------------------------------------------------

    def read(self, now: float) -> None:
        """Read and handle the frames queued on PULL, within the per-turn bounds."""
        end = now + READ_BUDGET
        pull = self.pull
        for _ in range(PULL_PER_TURN):
            if not readable(pull):
                return
            try:
                zf = pull.recv(ZMQ_NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.on_frame(zf)
            if time.monotonic() > end:
                return  # the rest is read next time: PULL stays readable

    def _catch_up(self, now: float) -> None:
        """Deliver parked frames whose node joined since; drop those past the grace."""
        if self.parked and (self._seen_version != self.version
                            or now - self.parked[0][0] > self.join_grace):
            self._seen_version = self.version
            self.unpark(now - self.join_grace)
        self._seen_version = self.version

    def on_frame(self, zf: zmq.Frame) -> None:
        """Check the identity and header of one actor frame, then decode and deliver it.

        Every rejection is dropped and counted; none decodes the messages.
        """
        data = zf.buffer
        if data.nbytes == WAKE_LEN and zf.bytes == self.wake_token:
            return  # a wake-up (see __init__)
        try:
            head = peek_header(data, self.max_frame)
        except FrameError as exc:
            self.drops.drop(exc.reason, 0, exc.detail)
            return
        user_ids = self.user_ids
        if user_ids is not None:
            try:
                uid = zf.get("User-Id")
            except zmq.ZMQError:  # no ZAP User-Id: not a CURVE connection (cannot happen)
                uid = ""
            if uid not in user_ids:
                self.drops.drop("revoked", head.src_node, f"key of {uid!r} is not allowed")
                return
            if uid != CLUSTER and uid != str(head.src_node):
                self.drops.drop("impostor", head.src_node, f"sent with the key of {uid}")
                return
        members = self.members
        try:
            check_header(head, self.node_id, self.incarnation, members)
        except FrameError as exc:
            if exc.reason == "nonmember" and head.src_node not in members:
                self.park(head, zf.bytes)
                return
            self.drops.drop(exc.reason, head.src_node, exc.detail)
            return
        self.accept(head, data)

    def park(self, head: Header, data: bytes) -> None:
        """Hold a frame from a node id not in the peer set (yet), within the bounds."""
        if len(self.parked) >= PARK_LIMIT or self.parked_bytes + len(data) > PARK_BYTES:
            self.drops.drop("park-full", head.src_node, f"{len(data)} bytes, parking full")
            return
        self.parked.append((time.monotonic(), head, data))
        self.parked_bytes += len(data)

    def unpark(self, expire_before: float) -> None:
        """Deliver parked frames that now pass; drop those parked before ``expire_before``
        whose node never joined."""
        members = self.members
        keep: list[tuple[float, Header, bytes]] = []
        for at, head, data in self.parked:
            if head.src_node in members:
                try:
                    check_header(head, self.node_id, self.incarnation, members)
                except FrameError as exc:
                    self.drops.drop(exc.reason, head.src_node, exc.detail)
                    continue
                self.accept(head, data)
            elif at < expire_before:
                self.drops.drop("nonmember", head.src_node, "never joined")
            else:
                keep.append((at, head, data))
        self.parked = keep
        self.parked_bytes = sum(len(d) for _, _, d in keep)

    def accept(self, head: Header, data: bytes | memoryview) -> None:
        """Decode and deliver a frame whose header passed the checks."""
        try:
            frame = decode_frame(data, self.max_frame, self.policy)
        except FrameError as exc:
            # A refused kind drops the whole frame (only a misbehaving member sends one):
            # counted in messages, so the count says how much was lost.
            n = head.n_messages if exc.reason == "kind" else 1
            self.drops.drop(exc.reason, head.src_node, exc.detail, n)
            return
        self.counts["frames_in"] += 1
        self.counts["msgs_in"] += len(frame.messages)
        try:
            self.deliver(frame.src_node, frame.src_incarnation, frame.messages)
        except Exception as exc:
            self.drops.drop("callback", frame.src_node, f"deliver raised {exc!r}")

    # -- the I/O thread's side ------------------------------------------------------------

    def turn(self, readable: bool, now: float, fallback_after: float) -> None:
        """The I/O thread's share, once per turn; never blocks.

        Without idle workers: read PULL when the poll said ``readable``. With
        them: read it only if no worker held it for ``fallback_after`` s (all
        busy). Either way deliver or expire parked frames. If a worker holds
        PULL now, it does all this itself.
        """
        covered = self.workers and now - self.last_worker < fallback_after
        if covered and not self.parked:
            return
        if not self.lock.acquire(blocking=False):
            return
        try:
            self._catch_up(now)
            if (readable and not self.workers) or (self.workers and not covered):
                self.read(now)
        finally:
            self.lock.release()

    def read_held(self, readable: bool, now: float) -> None:
        """The I/O thread's read while it holds the lock (it polled PULL itself)."""
        self._catch_up(now)
        if readable:
            self.read(now)

    def set_members(self, members: dict[int, int]) -> None:
        """Publish a new peer set (the I/O thread); the reader delivers parked frames
        of nodes that joined before it reads anything newer, and wait() returns."""
        self.members = members
        self.version += 1
        if self.parked:
            self.wake()

    def close(self) -> None:
        """End any wait, then close PULL and the wake-up socket (the I/O thread, at stop)."""
        with self._wake_lock:
            self.closed = True
            if self._waiting:
                with contextlib.suppress(zmq.ZMQError):
                    self._wake_tx.send(self.wake_token, ZMQ_NOBLOCK)
        with self.lock:  # a waiting worker returns at once after the wake-up
            for s in (self.pull, self._wake_tx):
                s.close(0)
