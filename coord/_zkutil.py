"""ZooKeeper helpers: exception translation and a watched directory cache."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kazoo.exceptions import (
    AuthFailedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NoNodeError,
    OperationTimeoutError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType

from coord._runtime import SerialWorker, Timer, TimerHandle, log
from coord.errors import CoordAuthError, CoordError, CoordUnavailable

__all__ = ["RefreshRetry", "WatchedDir", "seq_of", "session_id", "zk_errors"]

_UNAVAILABLE = (ConnectionLoss, SessionExpiredError, OperationTimeoutError, KazooTimeoutError)


@contextmanager
def zk_errors(what: str) -> Iterator[None]:
    """Translate kazoo exceptions raised inside the block into coord errors."""
    try:
        yield
    except NoAuthError as exc:
        raise CoordAuthError(
            f"{what}: ZooKeeper denied access (NoAuth): zk_auth is missing "
            "or is not the identity this cluster was created with"
        ) from exc
    except AuthFailedError as exc:
        raise CoordAuthError(f"{what}: ZooKeeper rejected the zk_auth credentials") from exc
    except _UNAVAILABLE as exc:
        raise CoordUnavailable(f"{what}: ZooKeeper unavailable ({type(exc).__name__})") from exc
    except KazooException as exc:
        raise CoordError(f"{what}: {type(exc).__name__}: {exc}") from exc


def session_id(client: Any) -> int:
    """The kazoo client's session id; ``ConnectionLoss`` while it is not connected."""
    cid = client.client_id
    if cid is None:
        raise ConnectionLoss("not connected")
    return int(cid[0])


def seq_of(name: str) -> int:
    """The sequence number ZooKeeper appended to a sequential node's name."""
    return int(name[-10:])


Items = dict[str, bytes | None]


class RefreshRetry:
    """Re-runs a failed cache refresh until one succeeds (issue 15).

    A watch fires once: a refresh that fails after it (a timeout under load,
    a connection loss, an unreadable child) leaves the cache stale until some
    unrelated change fires the next one, possibly never. So every failure
    schedules another refresh, 0.2 s doubling to 5 s with ±20 % jitter. The
    first failure of a streak is logged at warning, the recovery at info, the
    failures between at debug. Only the worker calls :meth:`failed` and
    :meth:`succeeded`; the timer thread only clears ``_pending`` and posts.
    """

    BASE = 0.2
    CAP = 5.0

    def __init__(self, what: str, timer: Timer, post: Callable[[], None]) -> None:
        self._what = what
        self._timer = timer
        self._post = post
        self.failures = 0  # failed refreshes in the current streak (read by tests)
        # Invariant: at most one retry is scheduled at a time.
        self._pending: TimerHandle | None = None

    def failed(self, exc: BaseException) -> None:
        """Note a failed refresh and schedule the next try (on the worker)."""
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "coord: refresh of %s failed (%r); retrying until it succeeds", self._what, exc
            )
        else:
            log.debug("coord: refresh of %s failed again (%r)", self._what, exc)
        if self._pending is None:
            delay = min(self.CAP, self.BASE * 2 ** min(self.failures - 1, 10))
            self._pending = self._timer.call_later(delay * random.uniform(0.8, 1.2), self._fire)

    def _fire(self) -> None:
        # Timer thread. A retry racing a successful refresh only costs one extra read.
        self._pending = None
        self._post()

    def succeeded(self) -> None:
        """End a failure streak, if any (on the worker)."""
        if self.failures:
            log.info(
                "coord: refresh of %s succeeded after %d failed tries", self._what, self.failures
            )
            self.failures = 0
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()


class WatchedDir:
    """The children of one znode (and optionally their data), kept fresh by watches.

    Watches only post work to the coordinator's serial worker, which reads
    ZooKeeper there and calls ``on_change(old, new)`` when the content
    differs. The work is as small as the event (issue 15: a join used to make
    every member re-read every member, n reads per node per join):

    - a children event re-lists the children and reads only the new ones;
    - a data event (changed or deleted) re-reads that one child;
    - :meth:`refresh` re-reads everything: at start, after a connection
      problem (the owner calls it on CONNECTED, since watches may be gone)
      and as the retry of any failed read (:class:`RefreshRetry`, backoff
      until one succeeds).

    Each child read sets that child's data watch, so a child deleted and
    created again with other data between two listings is still re-read.
    """

    def __init__(
        self,
        client: Any,
        path: str,
        worker: SerialWorker,
        with_data: bool,
        on_change: Callable[[Items, Items], None],
        timer: Timer,
    ) -> None:
        self.path = path
        self.items: Items = {}
        self._client = client
        self._worker = worker
        self._with_data = with_data
        self._on_change = on_change
        self.closed = False
        self.reads = 0  # ZooKeeper reads made (tests and bench: the cost of an event)
        # One bound-method object, so kazoo's watcher sets dedupe repeated watches.
        self._watch = self._on_watch
        self.retry = RefreshRetry(path, timer, self.post_refresh)

    def _on_watch(self, event: Any) -> None:
        # Runs on kazoo's thread: never block here.
        if self.closed:
            return
        path = getattr(event, "path", None)
        prefix = self.path + "/"
        if isinstance(path, str) and path.startswith(prefix) and "/" not in path[len(prefix):]:
            child = path[len(prefix):]
            self._worker.post(lambda: self.refresh_child(child), key=("child", path))
        elif path == self.path and getattr(event, "type", None) == EventType.CHILD:
            self._worker.post(self.refresh_children, key=("children", self.path))
        else:
            self.post_refresh()

    def post_refresh(self) -> None:
        """Schedule :meth:`refresh` on the worker."""
        self._worker.post(self.refresh, key=("refresh", self.path))

    def refresh(self) -> None:
        """Re-read the directory (on the worker thread); errors are logged and retried."""
        if self.closed:
            return
        try:
            new = self._read()
        except NoNodeError:
            new = {}
        except (KazooException, KazooTimeoutError) as exc:
            self.retry.failed(exc)
            return
        self.retry.succeeded()
        self._set(new)

    def refresh_children(self) -> None:
        """Re-list the children; read only those not known yet (on the worker)."""
        if self.closed:
            return
        try:
            children = self._list()
            new = {c: v for c, v in self.items.items() if c in children}
            added = [c for c in children if c not in self.items]
            new.update(self._read_children(added) if self._with_data else dict.fromkeys(added))
        except NoNodeError:
            new = {}
        except (KazooException, KazooTimeoutError) as exc:
            self.retry.failed(exc)
            return
        self._set(new)

    def refresh_child(self, child: str) -> None:
        """Re-read one child after its data watch fired (on the worker)."""
        if self.closed or not self._with_data:
            return
        new = dict(self.items)
        try:
            self.reads += 1
            new[child] = self._client.get(f"{self.path}/{child}", watch=self._watch)[0]
        except NoNodeError:
            new.pop(child, None)
        except (KazooException, KazooTimeoutError) as exc:
            self.retry.failed(exc)
            return
        self._set(new)

    def _set(self, new: Items) -> None:
        old, self.items = self.items, new
        if old != new:
            self._on_change(old, new)

    def _list(self) -> list[str]:
        self.reads += 1
        children: list[str] = self._client.get_children(self.path, watch=self._watch)
        return children

    def _read(self) -> Items:
        children = self._list()
        if not self._with_data:
            return dict.fromkeys(children)
        return self._read_children(children)

    def _read_children(self, children: list[str]) -> Items:
        self.reads += len(children)
        pending = {
            c: self._client.get_async(f"{self.path}/{c}", watch=self._watch) for c in children
        }
        new: Items = {}
        for child, result in pending.items():
            try:
                new[child] = result.get(timeout=10)[0]
            except NoNodeError:
                continue
        return new
