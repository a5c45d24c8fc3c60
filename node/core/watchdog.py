"""The watchdog thread: reports workers stuck on one message (skynet's monitor).

Like skynet, it compares each worker's message counter between checks: a
worker that is busy and whose counter has not moved for ``threshold``
seconds is reported once per message as "maybe in an endless loop", with
the message's source, the destination and the handler's name.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ..address import format_handle
from ..message import KIND_NAMES

if TYPE_CHECKING:
    from collections.abc import Callable

    from .scheduler import Worker


class Watchdog:
    """Watches the workers; calls ``report(dest_handle, text)`` for each stuck one."""

    def __init__(
        self,
        workers: list[Worker],
        report: Callable[[int, str], None],
        threshold: float = 5.0,
        name: str = "skymesh-watchdog",
    ) -> None:
        self._workers = workers
        self._report = report
        self.threshold = threshold
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = name
        # Owner: the monitor thread. index -> (message seen, since, reported)
        self._seen: dict[int, tuple[object, float, bool]] = {}
        self.reports = 0

    def start(self) -> None:
        """Start the watchdog thread."""
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop and join the watchdog thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def stuck(self) -> list[tuple[Worker, float]]:
        """Workers busy on the same message now, with how long (as last observed)."""
        now = time.monotonic()
        out = []
        for w in self._workers:
            seen = self._seen.get(w.index)
            if seen is not None and w.message is not None and w.message is seen[0]:
                out.append((w, now - seen[1]))
        return out

    def _loop(self) -> None:
        interval = max(0.05, min(0.5, self.threshold / 4))
        while not self._stop.wait(interval):
            now = time.monotonic()
            for w in self._workers:
                self._check(w, now)

    def _check(self, w: Worker, now: float) -> None:
        msg, svc = w.message, w.service
        seen = self._seen.get(w.index)
        if msg is None or svc is None:
            self._seen.pop(w.index, None)
            return
        if seen is None or seen[0] is not msg:
            self._seen[w.index] = (msg, now, False)
            return
        if seen[2] or now - seen[1] < self.threshold:
            return
        self._seen[w.index] = (msg, seen[1], True)
        self.reports += 1
        source, session, kind, payload = msg
        name = type(getattr(svc, "service", svc)).__name__  # a worker runs the Core
        method = payload[0] if kind <= 1 and isinstance(payload, tuple) else KIND_NAMES[kind]
        self._report(
            svc.handle,
            f"maybe in an endless loop: worker {w.index} on {format_handle(svc.handle)} "
            f"({name}.{method}) from {format_handle(source)} "
            f"session {session}, {now - seen[1]:.1f}s",
        )
