"""Blocking work off the workers: a bounded thread pool owned by the node.

``await self.offload(fn, *args, timeout=)`` runs ``fn(*args)`` on one of
the pool's threads (a database driver, an HTTP client, file I/O) and
resumes the coroutine with its result or its exception, the very object.
The workers go on dispatching meanwhile. A job whose waiter timed out (or
whose service ended) still runs to its end, but its result is dropped and
counted (``late-reply``); a job not yet started when its waiter gave up is
skipped.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .core.faults import local_error
from .core.suspend import suspend
from .message import ERROR, REPLY

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._router import Router
    from .core.servicecore import ServiceCore

__all__ = ["Offload"]


class Offload:
    """The node's pool for blocking calls; started on first use."""

    def __init__(self, router: Router, threads: int) -> None:
        if threads < 1:
            raise ValueError("offload_threads must be >= 1")
        self._router = router
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # Under _lock: jobs submitted and not started, and running now.
        self.queued = 0
        self.running = 0
        self.done = 0

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="skymesh-offload")
            return self._pool

    async def run(
        self, svc: ServiceCore, fn: Callable[..., Any], args: tuple[Any, ...],
        timeout: float | None,
    ) -> Any:
        """``fn(*args)`` on the pool; ``svc``'s coroutine waits (``CallTimeout`` after
        ``timeout`` seconds)."""
        handle, post = svc.handle, self._router.post
        given_up: set[int] = set()

        def job(session: int) -> None:
            with self._lock:
                self.queued -= 1
                if session in given_up:
                    return
                self.running += 1
            try:
                result = fn(*args)
            except BaseException as exc:  # the coroutine gets it, whatever it is
                post(handle, (0, session, ERROR, local_error(exc)))
            else:
                post(handle, (0, session, REPLY, result))
            finally:
                with self._lock:
                    self.running -= 1
                    self.done += 1

        def start(session: int) -> None:
            pool = self._executor()
            with self._lock:
                self.queued += 1
            pool.submit(job, session)

        return await suspend(svc, start, timeout, given_up.add)

    def stats(self) -> dict[str, int]:
        """Pool size, jobs waiting for a thread, running, finished."""
        with self._lock:
            return {"threads": self.threads, "queued": self.queued, "running": self.running,
                    "done": self.done}

    def stop(self) -> None:
        """Stop taking jobs; queued ones are cancelled, running ones finish on their own."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
