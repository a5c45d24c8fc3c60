"""A read-mostly view of a cluster from outside it (``skymesh status``, ``config``, ``health``).

It opens its own ZooKeeper session but joins nothing: no membership, no
election, no names. Layout read: ``/skymesh/<cluster>/`` with ``nodes/<id>``
(NodeInfo JSON), ``names/<name>`` (handle), ``groups/<group>/<handle>``,
``config/<key>`` (JSON), ``election/n-*`` (candidate node ids, lowest first)
and ``epoch``.

A cluster created with ``zk_auth`` is read with the same identity (and TLS)::

    with ClusterView("127.0.0.1:2181", "demo", auth=ZkAuth.parse("digest:u:p")) as view:
        print(view.members(), view.master())
"""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, Self

from coord._zkutil import seq_of, zk_errors
from coord.api import NodeInfo
from coord.errors import CoordAuthError, CoordUnavailable
from coord.security import TlsFiles, ZkAuth, start_zk_client, zk_client_kwargs

__all__ = ["ClusterView"]


class ClusterView:
    """Reads (and, for config, writes) a cluster's ZooKeeper tree without joining it.

    Raises ``CoordUnavailable`` when ZooKeeper cannot be reached, and its
    subclass ``CoordAuthError`` when ZooKeeper refuses ``auth`` or TLS fails.
    """

    def __init__(
        self,
        zk_hosts: str,
        cluster: str,
        timeout: float = 5.0,
        *,
        auth: ZkAuth | str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        from kazoo.client import KazooClient

        if isinstance(auth, str):
            auth = ZkAuth.parse(auth)
        self.root = f"/skymesh/{cluster}"
        self._hosts = zk_hosts
        self._tls = tls
        self._zk = KazooClient(hosts=zk_hosts, timeout=timeout, **zk_client_kwargs(auth, tls))
        self._timeout = timeout

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect (blocking, bounded by the timeout)."""
        try:
            start_zk_client(self._zk, self._hosts, self._tls, self._timeout)
        except CoordAuthError:
            raise  # a refused TLS handshake, named by start_zk_client
        except Exception as exc:
            raise CoordUnavailable(f"cannot reach ZooKeeper: {exc}") from exc

    def close(self) -> None:
        """Disconnect. Idempotent."""
        try:
            self._zk.stop()
        finally:
            self._zk.close()

    def _children(self, path: str) -> list[str]:
        from kazoo.exceptions import NoNodeError

        with zk_errors(f"reading {path}"):
            try:
                return list(self._zk.get_children(f"{self.root}/{path}"))
            except NoNodeError:
                return []

    def _get(self, path: str) -> bytes | None:
        from kazoo.exceptions import NoNodeError

        with zk_errors(f"reading {path}"):
            try:
                data, _ = self._zk.get(f"{self.root}/{path}")
            except NoNodeError:
                return None
        return bytes(data) if data is not None else None

    def members(self) -> dict[int, NodeInfo]:
        """Live nodes by id."""
        out: dict[int, NodeInfo] = {}
        for child in self._children("nodes"):
            data = self._get(f"nodes/{child}")
            if data:
                try:
                    info = NodeInfo.from_json(data)
                except ValueError:
                    continue
                out[info.node_id] = info
        return out

    def names(self) -> dict[str, int]:
        """Global names and their handles."""
        out: dict[str, int] = {}
        for name in self._children("names"):
            data = self._get(f"names/{name}")
            if data is not None:
                try:
                    out[name] = int(data)
                except ValueError:
                    continue
        return out

    def groups(self) -> dict[str, list[int]]:
        """Non-empty groups and their sorted member handles."""
        out = {}
        for g in self._children("groups"):
            members = sorted(int(h) for h in self._children(f"groups/{g}") if h.isdigit())
            if members:
                out[g] = members
        return out

    def master(self) -> tuple[int | None, int]:
        """``(master node id or None, epoch)``: the lowest election candidate."""
        candidates = sorted(self._children("election"), key=seq_of)
        master = None
        if candidates:
            data = self._get(f"election/{candidates[0]}")
            try:
                master = int(data) if data else None
            except ValueError:
                master = None
        epoch_data = self._get("epoch")
        return master, int(epoch_data or b"0")

    def config_list(self) -> dict[str, Any]:
        """Every config key and its JSON value."""
        out = {}
        for key in self._children("config"):
            data = self._get(f"config/{key}")
            try:
                out[key] = json.loads(data) if data else None
            except ValueError:
                continue
        return out

    def config_get(self, key: str, default: Any = None) -> Any:
        """One config value, or ``default``."""
        data = self._get(f"config/{key}")
        if data is None:
            return default
        return json.loads(data)

    def config_set(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key``; every node watching it is told."""
        if not key or "/" in key:
            raise ValueError(f"invalid config key {key!r}")
        data = json.dumps(value).encode()
        path = f"{self.root}/config/{key}"
        with zk_errors(f"config_set({key!r})"):
            if self._zk.exists(path):
                self._zk.set(path, data)
            else:  # created with the client's default_acl: the cluster identity's
                self._zk.create(path, data, makepath=True)
