"""Master election in ZooKeeper, with an epoch that grows each term.

Each node creates an ephemeral sequential ``election/n-`` holding its id; the
lowest is the master. A node taking over increments ``epoch`` (compare and
set on the znode's version) before it acts as master, so every term has a
larger epoch than the one before. A master steps down the moment its
session is SUSPENDED (set from kazoo's thread without blocking), so two
masters never act at once: the next one is elected only after the old
session's node is gone, which takes longer than noticing the suspension.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, KazooException, NodeExistsError, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from coord._runtime import SerialWorker, Timer, log
from coord._zkutil import RefreshRetry, seq_of, session_id

__all__ = ["ZkElection"]


class ZkElection:
    """This node's candidacy and view of the cluster's master."""

    def __init__(
        self,
        client: Any,
        root: str,
        worker: SerialWorker,
        emit: Callable[..., None],
        connected: Callable[[], bool],
        timer: Timer,
    ) -> None:
        self._client = client
        self._path = f"{root}/election"
        self._epoch_path = f"{root}/epoch"
        self._worker = worker
        self._emit = emit
        self._connected = connected
        self._lock = threading.Lock()
        self._node_id = 0
        self._me: str | None = None  # my candidate znode name
        self._uncertain = False  # a create of my candidate may have happened unseen
        # Invariant: _master implies the session was CONNECTED when last checked
        # and the epoch was bumped for this term.
        self._master = False
        self._epoch = 0
        self._master_id: int | None = None
        self._reported: tuple[bool, int, int | None] | None = None
        self._watch = self._on_watch
        self._retry = RefreshRetry(
            self._path, timer, lambda: worker.post(self.refresh, key="election")
        )

    def _on_watch(self, _event: object) -> None:
        self._worker.post(self.refresh, key="election")

    def join(self, node_id: int) -> None:
        """Create this node's candidate znode (worker or start thread).

        Safe to call again after a dropped connection: if the create may have
        happened, a candidate of this session is adopted rather than a second
        one made (two would keep this node from ever leading while both live).
        """
        self._node_id = node_id
        if self._uncertain:
            sid = session_id(self._client)
            for child in self._client.get_children(self._path):
                stat = self._client.exists(f"{self._path}/{child}")
                if stat is not None and stat.ephemeralOwner == sid:
                    self._me, self._uncertain = child, False
                    return
        self._uncertain = True
        self._me = self._client.create(
            f"{self._path}/n-", str(node_id).encode(), ephemeral=True, sequence=True
        ).rsplit("/", 1)[1]
        self._uncertain = False

    def rejoin(self) -> None:
        """After a session expiry: the old candidate is gone, stand again."""
        self._me = None
        self.join(self._node_id)

    def is_master(self) -> bool:
        """True while this node is master of a live session."""
        return self._master and self._connected()

    def master(self) -> tuple[int | None, int]:
        """``(master id, epoch)`` as last seen."""
        with self._lock:
            return self._master_id, self._epoch

    def step_down_now(self) -> None:
        """Stop acting as master at once (safe on kazoo's thread); notify later."""
        self._master = False
        self._worker.post(self._report, key="election-report")

    def refresh(self) -> None:
        """Re-read candidates and epoch; take over or step down (on the worker)."""
        try:
            self._refresh()
        except (KazooException, KazooTimeoutError) as exc:
            self._retry.failed(exc)
            if not self._connected():
                self._master = False
        else:
            self._retry.succeeded()
        self._report()

    def _refresh(self) -> None:
        children = sorted(self._client.get_children(self._path, watch=self._watch), key=seq_of)
        epoch = self._read_epoch()
        master_id: int | None = None
        for child in children:
            try:
                master_id = int(self._client.get(f"{self._path}/{child}")[0])
                break
            except NoNodeError:
                continue
        lead = bool(children) and children[0] == self._me
        if lead and not self._master and self._connected():
            epoch = self._bump()
            self._master = self._connected()
        elif not lead:
            self._master = False
        with self._lock:
            self._epoch = max(self._epoch, epoch)
            self._master_id = master_id

    def _read_epoch(self) -> int:
        """The stored epoch (0 while none exists), always leaving a watch on ``epoch``.

        ``get`` sets no watch when the znode is missing, so a node that read before the
        first master created it would never hear of it (issue 12). ``exists`` does set
        one on a missing znode; if the epoch appeared in between, read it again.
        """
        while True:
            try:
                data, _ = self._client.get(self._epoch_path, watch=self._watch)
                return int(data or b"0")
            except NoNodeError:
                if self._client.exists(self._epoch_path, watch=self._watch) is None:
                    return 0

    def _bump(self) -> int:
        while True:
            try:
                data, stat = self._client.get(self._epoch_path)
            except NoNodeError:
                try:
                    self._client.create(self._epoch_path, b"1")
                except NodeExistsError:
                    continue
                return 1
            epoch = int(data or b"0") + 1
            try:
                self._client.set(self._epoch_path, str(epoch).encode(), version=stat.version)
            except BadVersionError:
                continue
            return epoch

    def _report(self) -> None:
        with self._lock:
            state = (self.is_master(), self._epoch, self._master_id)
            if state == self._reported:
                return
            self._reported = state
        self._emit("on_master", *state)

    def leave(self) -> None:
        """Withdraw the candidacy (blocking, best effort)."""
        self._master = False
        if self._me is not None:
            try:
                self._client.delete(f"{self._path}/{self._me}")
            except (KazooException, KazooTimeoutError):
                log.debug("coord: leaving election failed", exc_info=True)
            self._me = None
