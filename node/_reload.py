"""Live code reload: a fresh import of a module, then a class swap on each service's worker.

In the spirit of skynet's ``inject``/``snax.hotfix`` and Erlang's code loading:
the operator names a module; this node imports it again from its source on
disk and, for every live service whose class was defined in that module,
posts a ``reload`` SYSTEM event carrying the new class of the same qualified
name. The service's own worker swaps ``__class__`` between two messages
(``core.runner.ServiceCore._reload``) and calls ``on_reload(old_class)``, so
the swap never lands in the middle of a handler of that service.

Invariants and reasons:
- **A failed import changes nothing.** The new code runs in a fresh module
  object (``importlib.reload`` would re-run it inside the old module's
  namespace, so a module that fails half way leaves old code reading half-new
  globals). The old module goes back into ``sys.modules`` on failure.
- **Old and new code coexist** (Erlang's two versions): functions of the old
  module keep their own globals; a coroutine suspended in an old handler
  finishes in the old code; everything posted after the swap runs the new.
- **Source, not bytecode.** The file is compiled from its text now, so a
  rewrite within the same second and size cannot be hidden by a stale ``.pyc``.
- **One reload at a time** per process (a lock): swap events from two reloads
  of one module reach each mailbox in the order the reloads ran.
- **Operator only.** This is reached from ``Node.reload`` (the console and the
  CLI); the harbor refuses ``reload`` from the network (``REMOTE_EVENTS``).
- skymesh's own packages (``node``, ``harbor``, ``coord``) are refused: their
  classes' identity is what the runtime checks.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .address import format_handle
from .core.host import RELOAD
from .core.servicecore import ServiceCore
from .errors import ReloadError
from .message import REPLY, SYSTEM

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._router import Router

__all__ = ["ReloadReport", "Reloader"]

_OWN = ("node", "harbor", "coord")
_LOCK = threading.Lock()  # one reload at a time in this process


@dataclass
class ReloadReport:
    """What one node's reload did.

    ``swapped``: ``(address, class qualname)`` of services now running the new
    class. ``kept``: ``(address, class qualname, reason)`` of services of the
    module still running their old class (class gone from the module, layout
    changed, stopping, or no answer within the timeout: then the swap is
    still queued and happens at that service's next message). ``loaded``:
    False when the module was not imported on this node (nothing done).
    """

    module: str
    node_id: int
    loaded: bool = True
    swapped: list[tuple[str, str]] = field(default_factory=list)
    kept: list[tuple[str, str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable lines: a summary, then one per service."""
        if not self.loaded:
            return [f"node {self.node_id}: {self.module} is not loaded here; nothing reloaded"]
        out = [(f"node {self.node_id}: reloaded {self.module}: {len(self.swapped)} service(s) "
                f"swapped, {len(self.kept)} kept their old class")]
        out += [f"  swapped {addr} {name}" for addr, name in self.swapped]
        out += [f"  kept {addr} {name}: {why}" for addr, name, why in self.kept]
        return out


class Reloader:
    """Re-imports a module and swaps the classes of this node's services to it."""

    def __init__(self, router: Router, log: Callable[[int, str, str], None]) -> None:
        self._router = router
        self._log = log

    def reload(self, module: str, timeout: float = 10.0) -> ReloadReport:
        """Import ``module`` again and swap its running services; wait up to ``timeout``
        seconds for their workers to confirm. Blocks the calling (plain) thread.

        Raises ``ReloadError`` (one line saying why) when the module may not be
        reloaded or its new code fails to import; the old code keeps running.
        """
        report = ReloadReport(module, self._router.node_id)
        with _LOCK:
            old = sys.modules.get(module)
            if old is None:
                report.loaded = False
                return report
            new = self._import(module, old)
            targets = self._targets(module, new, report)
            self._swap(targets, report, timeout)
        lines = report.lines()
        self._log(0, "info", lines[0])
        for addr, name, why in report.kept:
            self._log(0, "warning", f"reload {module}: {addr} {name} kept its old class: {why}")
        return report

    # -- the import ------------------------------------------------------------------------

    def _import(self, name: str, old: ModuleType) -> ModuleType:
        if name.partition(".")[0] in _OWN:
            raise ReloadError(f"{name} is part of skymesh and cannot be reloaded")
        if name == "__main__":
            raise ReloadError("__main__ cannot be reloaded: start services from a module")
        spec = getattr(old, "__spec__", None)
        loader = getattr(spec, "loader", None)
        get_source = getattr(loader, "get_source", None)
        if spec is None or get_source is None or not spec.origin:
            raise ReloadError(f"{name} has no Python source to reload from")
        importlib.invalidate_caches()  # a file added beside it since the first import
        new = importlib.util.module_from_spec(spec)
        # While the new code runs it is sys.modules[name], as in a first import (a
        # dataclass or a self-import looks itself up there); the old one comes back
        # if it fails.
        sys.modules[name] = new
        try:
            source = get_source(name)
            if source is None:
                raise ImportError(f"no source for {name}")
            code = compile(source, spec.origin, "exec", dont_inherit=True)
            exec(code, new.__dict__)  # noqa: S102  # an import: the operator named this module
        except (Exception, SystemExit) as exc:
            sys.modules[name] = old
            why = f"{type(exc).__name__}: {exc}"
            self._log(0, "error", f"reload {name} failed, the old code keeps running: {why}")
            raise ReloadError(f"reload {name} failed: {why}; the old code keeps running") from exc
        parent, _, child = name.rpartition(".")
        if parent and parent in sys.modules:
            setattr(sys.modules[parent], child, new)
        return new

    # -- the swap --------------------------------------------------------------------------

    def _targets(
        self, name: str, new: ModuleType, report: ReloadReport
    ) -> list[tuple[ServiceCore, type]]:
        """The live services whose class was defined in ``name``, with their new class."""
        targets = []
        for svc in list(self._router.services.values()):
            cls = type(svc)
            if cls.__module__ != name:
                continue
            fresh = _lookup(new, cls.__qualname__)
            addr = format_handle(svc.handle)
            if fresh is None:
                report.kept.append((addr, cls.__qualname__, "no longer in the module"))
            elif not (isinstance(fresh, type) and issubclass(fresh, ServiceCore)):
                report.kept.append((addr, cls.__qualname__, "no longer a service class"))
            else:
                targets.append((svc, fresh))
        return targets

    def _swap(
        self, targets: list[tuple[ServiceCore, type]], report: ReloadReport, timeout: float
    ) -> None:
        """Post each swap to its service's mailbox (after what is queued there: those
        messages were sent to the old code) and wait for the workers' answers."""
        router = self._router
        done = threading.Event()
        answers: dict[int, str] = {}
        lock = threading.Lock()
        sessions: list[int] = []

        def answered(handle: int) -> Callable[[int, Any], None]:
            def record(kind: int, payload: Any) -> None:
                with lock:
                    answers[handle] = str(payload) if kind == REPLY else "failed"
                    if len(answers) == len(targets):
                        done.set()
            return record

        if not targets:
            return
        for svc, fresh in targets:
            s = router.ext_session(answered(svc.handle))
            sessions.append(s)
            router.post(svc.handle, (router.ext_handle, s, SYSTEM, (RELOAD, fresh)))
        done.wait(timeout)
        for s in sessions:
            router.forget_ext_session(s)
        with lock:
            got = dict(answers)
        for svc, fresh in targets:
            addr, qual = format_handle(svc.handle), fresh.__qualname__
            outcome = got.get(svc.handle)
            if outcome is None:
                report.kept.append((addr, qual, f"no answer in {timeout}s; swap still queued"))
            elif outcome.startswith("swapped"):
                note = "" if outcome == "swapped" else f" ({outcome})"
                report.swapped.append((addr, qual + note))
            else:
                report.kept.append((addr, qual, outcome))


def _lookup(module: ModuleType, qualname: str) -> Any:
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj
