"""coord's own threads: a serial worker, a timer and a pool for ``submit``.

Nothing here blocks a caller: work is queued and run on these threads.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from coord.errors import CoordUnavailable

log = logging.getLogger("coord")
T = TypeVar("T")


class SerialWorker:
    """One thread running posted callables in order.

    ``post(fn, key=k)`` drops the call if one with the same key is still
    queued (it would do the same work). Exceptions are logged, never fatal.
    """

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._queue: deque[tuple[Hashable | None, Callable[[], None]]] = deque()
        self._pending: set[Hashable] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, fn: Callable[[], None], key: Hashable | None = None) -> None:
        """Queue ``fn``; ignored after :meth:`stop`."""
        with self._cond:
            if self._stopping or (key is not None and key in self._pending):
                return
            if key is not None:
                self._pending.add(key)
            self._queue.append((key, fn))
            self._cond.notify()

    def stop(self, drain: bool = True) -> None:
        """Stop accepting work, run (or drop) what is queued, join the thread."""
        with self._cond:
            self._stopping = True
            if not drain:
                self._queue.clear()
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                key, fn = self._queue.popleft()
                if key is not None:
                    self._pending.discard(key)
            try:
                fn()
            except Exception:
                log.exception("coord: error in %s", self._thread.name)


class TimerHandle:
    """A scheduled call; :meth:`cancel` prevents it if it has not run yet."""

    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        """Do not run the call."""
        self.cancelled = True


class Timer:
    """One thread turning deadlines into calls; callbacks must be quick."""

    def __init__(self, name: str) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> TimerHandle:
        """Run ``fn`` on the timer thread after ``delay`` seconds."""
        import time

        handle = TimerHandle(time.monotonic() + max(0.0, delay), fn)
        with self._cond:
            heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
            self._cond.notify()
        return handle

    def stop(self) -> None:
        """Drop pending calls and join the thread."""
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(10)

    def _run(self) -> None:
        import time

        while True:
            with self._cond:
                while not self._stopping:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                handle = heapq.heappop(self._heap)[2]
            if handle.cancelled:
                continue
            try:
                handle.fn()
            except Exception:
                log.exception("coord: error in timer callback")


class Pool:
    """The thread pool behind ``Coordinator.submit``."""

    def __init__(self, name: str, workers: int = 8) -> None:
        self._name = name
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._closed = False

    def submit(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        callback: Callable[[T | None, BaseException | None], None],
    ) -> None:
        """Run ``fn(*args)`` then ``callback(result, exc)`` on a pool thread."""

        def done(fut: Future[T]) -> None:
            exc = fut.exception()
            try:
                if exc is not None:
                    callback(None, exc)
                else:
                    callback(fut.result(), None)
            except Exception:
                log.exception("coord: error in submit callback")

        with self._lock:
            if self._closed:
                raise CoordUnavailable("coordinator is stopped")
            fut = self._executor.submit(fn, *args)
        fut.add_done_callback(done)

    def stop(self) -> None:
        """Finish queued calls and join the threads."""
        with self._lock:
            self._closed = True
        # A pool thread (a submit callback calling stop) cannot join itself.
        inside = threading.current_thread().name.startswith(self._name)
        self._executor.shutdown(wait=not inside, cancel_futures=False)
