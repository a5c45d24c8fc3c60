"""ZooKeeper helpers: exception translation and a watched directory cache."""

from __future__ import annotations

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

from coord._runtime import SerialWorker, log
from coord.errors import CoordAuthError, CoordError, CoordUnavailable

__all__ = ["WatchedDir", "seq_of", "zk_errors"]

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


def seq_of(name: str) -> int:
    """The sequence number ZooKeeper appended to a sequential node's name."""
    return int(name[-10:])


Items = dict[str, bytes | None]


class WatchedDir:
    """The children of one znode (and optionally their data), kept fresh by watches.

    Watches only post a refresh to the coordinator's serial worker; the
    refresh reads ZooKeeper there and calls ``on_change(old, new)`` when the
    content differs. After a connection problem the owner calls
    :meth:`refresh` again (on CONNECTED), since watches may be gone.
    """

    def __init__(
        self,
        client: Any,
        path: str,
        worker: SerialWorker,
        with_data: bool,
        on_change: Callable[[Items, Items], None],
    ) -> None:
        self.path = path
        self.items: Items = {}
        self._client = client
        self._worker = worker
        self._with_data = with_data
        self._on_change = on_change
        self.closed = False
        # One bound-method object, so kazoo's watcher sets dedupe repeated watches.
        self._watch = self._on_watch

    def _on_watch(self, _event: object) -> None:
        # Runs on kazoo's thread: never block here.
        if not self.closed:
            self._worker.post(self.refresh, key=("refresh", self.path))

    def post_refresh(self) -> None:
        """Schedule :meth:`refresh` on the worker."""
        self._worker.post(self.refresh, key=("refresh", self.path))

    def refresh(self) -> None:
        """Re-read the directory (on the worker thread); errors are logged."""
        if self.closed:
            return
        try:
            new = self._read()
        except NoNodeError:
            new = {}
        except (KazooException, KazooTimeoutError) as exc:
            log.debug("coord: refresh of %s failed: %r", self.path, exc)
            return
        old, self.items = self.items, new
        if old != new:
            self._on_change(old, new)

    def _read(self) -> Items:
        children = self._client.get_children(self.path, watch=self._watch)
        if not self._with_data:
            return dict.fromkeys(children)
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
