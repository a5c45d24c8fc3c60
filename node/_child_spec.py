"""Child specs and supervisor options: parsing and checking what a Supervisor is given.

Everything here is plain data, checked once when the supervisor starts;
bad input raises ``ValueError``/``TypeError`` (the supervisor's start then
fails with ``ServiceStartError`` carrying it). ``node/supervisor.py`` is
the service that acts on them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .service import Service

__all__ = [
    "RESTARTS", "STRATEGIES", "Child", "ChildSpec", "Options", "parse_children", "parse_options",
]

RESTARTS = ("permanent", "transient", "temporary")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")


@dataclass(frozen=True)
class Options:
    """A supervisor's settings (the ``options`` dict of ``on_start``)."""

    strategy: str = "one_for_one"  # which children restart with a failed one
    intensity: int = 3  # max restarts within period before the supervisor gives up
    period: float = 5.0  # seconds of the intensity window
    backoff_base: float = 0.05  # seconds before a child's first restart
    backoff_factor: float = 2.0  # growth of the delay per consecutive restart of a child
    backoff_max: float = 5.0  # cap of the delay
    jitter: float = 0.2  # each delay is scaled by a random factor in [1-jitter, 1+jitter]
    reset_after: float | None = None  # a child that ran this long restarts at backoff_base
    name_wait: float = 30.0  # seconds to wait for a global name's old holder to let go


@dataclass(frozen=True)
class ChildSpec:
    """How to start, name, place and restart one child of a :class:`Supervisor`.

    ``cls`` is a Service class or ``"module:Class"`` (a remote ``node`` only
    starts classes it allows: ``node.launchable`` or its config ``services``).
    ``name``: a node-local ``".name"`` is given at spawn; a global name is
    one the child registers itself in ``on_start``, which the supervisor waits
    to see released by the previous instance before a restart. ``restart``:
    ``permanent | transient | temporary``. ``node``: place the child on that
    node (``None``: the supervisor's). ``shutdown``: seconds to wait for the
    child to end when the supervisor stops it.

    Example::

        ChildSpec("game.rooms:Rooms", args=(8,), name="rooms", restart="transient", node=2)

    The dict form (for config and for crossing nodes) uses the same keys,
    with ``"class"`` for ``cls``: ``{"class": "game.rooms:Rooms", "args": [8]}``.
    """

    cls: type[Service] | str
    args: tuple[Any, ...] = ()
    id: str | None = None
    name: str | None = None
    restart: str = "permanent"
    node: int | None = None
    shutdown: float = 5.0

    @classmethod
    def of(cls, value: ChildSpec | Mapping[str, Any]) -> ChildSpec:
        """A spec as is, or built from its dict form; raises ``ValueError``/``TypeError``."""
        if isinstance(value, ChildSpec):
            spec = value
        elif isinstance(value, Mapping):
            unknown = set(value) - {"class", "args", "id", "name", "restart", "node", "shutdown"}
            if unknown or "class" not in value:
                raise ValueError(f"child spec {dict(value)!r}: needs 'class'; unknown {unknown}")
            args = value.get("args", ())
            if not isinstance(args, list | tuple):
                raise TypeError(f"child spec args must be a list, not {args!r}")
            spec = ChildSpec(
                value["class"], tuple(args), value.get("id"), value.get("name"),
                value.get("restart", "permanent"), value.get("node"), value.get("shutdown", 5.0),
            )
        else:
            raise TypeError(f"not a child spec: {value!r}")
        spec.check()
        return spec

    def check(self) -> None:
        """Raise ``ValueError``/``TypeError`` if a field is malformed."""
        if isinstance(self.cls, str):
            if ":" not in self.cls:
                raise ValueError(f"child class {self.cls!r} must look like 'module:Class'")
        elif not (isinstance(self.cls, type) and issubclass(self.cls, Service)):
            raise TypeError(f"child class {self.cls!r} is not a Service subclass")
        if not isinstance(self.args, tuple):
            raise TypeError(f"child args must be a tuple, not {self.args!r}")
        if self.id is not None and (not isinstance(self.id, str) or not self.id):
            raise ValueError(f"child id must be a non-empty string, not {self.id!r}")
        if self.restart not in RESTARTS:
            raise ValueError(f"restart must be one of {RESTARTS}, not {self.restart!r}")
        if self.node is not None and (isinstance(self.node, bool) or not isinstance(self.node, int)
                                      or self.node <= 0):
            raise ValueError(f"node must be a positive node id, not {self.node!r}")
        if self.name is not None and (not isinstance(self.name, str) or self.name in ("", ".")):
            raise ValueError(f"bad child name {self.name!r}")
        if not isinstance(self.shutdown, int | float) or self.shutdown < 0:
            raise ValueError(f"shutdown must be seconds >= 0, not {self.shutdown!r}")

    @property
    def class_name(self) -> str:
        """The class's name, for ids and logs."""
        return self.cls.rpartition(":")[2] if isinstance(self.cls, str) else self.cls.__name__

    def to_dict(self) -> dict[str, Any]:
        """The dict form (``cls`` as ``"module:Class"``): what may cross nodes."""
        path = self.cls if isinstance(self.cls, str) else (
            f"{self.cls.__module__}:{self.cls.__qualname__}")
        return {"class": path, "args": list(self.args), "id": self.id, "name": self.name,
                "restart": self.restart, "node": self.node, "shutdown": self.shutdown}


@dataclass(eq=False)
class Child:
    """A child's spec and its live state. Owner: the supervisor's running worker.

    Invariant: ``handle`` is not None exactly when ``state`` is running or
    stopping, and then ``Supervisor._by_handle[handle] is self``.
    """

    id: str
    spec: ChildSpec
    handle: int | None = None
    state: str = "starting"  # starting|running|down|restarting|stopping|stopped
    restarts: int = 0  # restarts done (successful or not) since the supervisor started
    failures: int = 0  # consecutive restarts without a long enough run: the backoff exponent
    started_at: float = 0.0
    last_handle: int | None = None  # the previous instance (its global name may linger)
    last_exit: str = ""
    restarted_at: deque[float] = field(default_factory=lambda: deque(maxlen=32))


def parse_options(given: Mapping[str, Any]) -> Options:
    """The options dict checked, with defaults filled in."""
    if not isinstance(given, Mapping):
        raise TypeError(f"supervisor options must be a dict, not {given!r}")
    known = set(Options.__dataclass_fields__)
    unknown = set(given) - known
    if unknown:
        raise ValueError(f"unknown supervisor options {sorted(unknown)}; known: {sorted(known)}")
    opts = Options(**given)
    if opts.strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, not {opts.strategy!r}")
    for key in ("intensity", "period", "backoff_base", "backoff_factor", "backoff_max",
                "jitter", "name_wait", "reset_after"):
        v = getattr(opts, key)
        if v is None and key == "reset_after":
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
            raise ValueError(f"{key} must be a number >= 0, not {v!r}")
    if opts.backoff_factor < 1 or opts.jitter > 1:
        raise ValueError("backoff_factor must be >= 1 and jitter in [0, 1]")
    return opts


def parse_children(specs: Iterable[ChildSpec | Mapping[str, Any]]) -> list[Child]:
    """Each spec checked, with a unique id (``id``, else name, else class name, ``#i``
    added to a repeated default)."""
    if isinstance(specs, str | bytes | Mapping):
        raise TypeError("children must be a list of ChildSpec or dicts")
    out: list[Child] = []
    seen: set[str] = set()
    for spec in map(ChildSpec.of, specs):
        cid = spec.id or spec.name or spec.class_name
        if cid in seen:
            if spec.id is not None:
                raise ValueError(f"two children have the id {cid!r}")
            cid = f"{cid}#{len(out)}"
        seen.add(cid)
        out.append(Child(cid, spec))
    return out
