"""What a compiled node core would buy on the local path (issue 13): the decision aid
that chose composition for the compiled core the node now has (``node.core.native``;
``bench.local`` measures the real thing, compiled and with ``SKYMESH_PURE=1``).

Run: ``python -m bench.native_core [--n 500000] [--rounds 3]`` (Cython comes with
the dev extras, the C compiler is the machine's gcc; nothing of skymesh is compiled).

The module below (``PROTO``) is a stand-in of the local one-way path as the
node runs it: ``Service.send`` (a dict probe, two tuples, ``Mailbox.offer``),
the scheduler's one-message-a-turn loop, ``ServiceCore._dispatch``'s SEND
branch and a handler that counts, in one thread (send N, then run them). In
pure Python it lands where ``bench.local``'s one-way does against the same
deque loop, so its ratios say what compiling the real core would do. The same
source is also compiled by Cython with typed declarations (``PXD``: native
classes, C fields, typed locals) in two shapes:

- ``subclass``: the service *is* the native core's instance (a Python subclass
  of the extension type with a ``__dict__``), as ``ServiceCore`` is today;
- ``composition``: the service is a plain Python object and the native core
  holds it (``Core.service``), the shape docs/design.md proposes.

One JSON line per figure, each with its ratio to the deque loop measured in
the same round; medians over ``--rounds`` alternating rounds.
"""

from __future__ import annotations

import argparse
import gc
import importlib.machinery
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.local import baseline  # the same deque loop as bench.local's figures

PROTO = '''
from collections import deque

SEND = 0
CALL = 1
RUNNING = 1


class Overloaded(Exception):
    pass


class Mailbox:
    def __init__(self, service, global_queue):
        self.service = service
        self.limit = 0
        self.queue = deque()
        self.in_global = False
        self.overload = 1 << 40
        self.global_queue = global_queue

    def offer(self, msg):
        if self.limit and len(self.queue) >= self.limit:
            raise Overloaded("full")
        self.queue.append(msg)
        if self.in_global:
            return False
        self.in_global = True
        self.global_queue.append(self)
        return True

    def release(self):
        if self.queue:
            self.global_queue.append(self)
            return
        self.in_global = False


class Core:
    def __init__(self, handle, services, global_queue, handlers, service=None):
        self.service = self if service is None else service
        self.handle = handle
        self._services = services
        self._mailbox = Mailbox(self, global_queue)
        self._handlers = handlers
        self._state = RUNNING
        self._n_msgs = 0
        self._forks = []

    def send(self, dest, method, *args):
        svc = self._services.get(dest)
        if svc is not None:
            try:
                svc._mailbox.offer((self.handle, 0, SEND, (method, args)))
            except Overloaded:
                pass

    def _dispatch(self, msg):
        source, session, kind, payload = msg
        if kind <= CALL:
            if self._state != RUNNING:
                return
            self._n_msgs += 1
            try:
                method, args = payload
            except ValueError:
                method, args = payload[0], payload[1]
            try:
                fn, is_async = self._handlers[method]
            except KeyError:
                return
            if not is_async and not session:
                try:
                    fn(self.service, *args)
                except Exception:
                    pass
        if self._forks:
            pass


class Worker:
    def __init__(self):
        self.message = None
        self.service = None


def run_worker(global_queue, w, running):
    popleft = global_queue.popleft
    requeue = global_queue.append
    while global_queue:
        mb = popleft()
        q = mb.queue
        svc = mb.service
        w.service = svc
        while True:
            if len(q) > mb.overload:
                mb.overload *= 2
            try:
                msg = q.popleft()
            except IndexError:
                break
            w.message = msg
            try:
                svc._dispatch(msg)
            except BaseException:
                pass
            if global_queue or not q or not running:
                break
        w.message = None
        if q:
            requeue(mb)
        else:
            mb.release()
'''

PXD = """
cimport cython

cdef class Mailbox:
    cdef public object service
    cdef public Py_ssize_t limit
    cdef public object queue
    cdef public bint in_global
    cdef public Py_ssize_t overload
    cdef public object global_queue
    cpdef bint offer(self, tuple msg) except -1
    cpdef release(self)

cdef class Core:
    cdef public object service
    cdef public long handle
    cdef public dict _services
    cdef public Mailbox _mailbox
    cdef public dict _handlers
    cdef public int _state
    cdef public long _n_msgs
    cdef public list _forks
    DICT
    @cython.locals(session=long, kind=int, is_async=bint)
    cpdef _dispatch(self, tuple msg)

cdef class Worker:
    cdef public object message
    cdef public object service

@cython.locals(mb=Mailbox, svc=Core, msg=tuple)
cpdef run_worker(object global_queue, Worker w, bint running)
"""


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, **extra}), flush=True)


def build(tmp: Path, name: str, with_dict: bool) -> ModuleType:
    """Compile PROTO as module ``name`` with the typed declarations; import it."""
    (tmp / f"{name}.py").write_text(PROTO)
    pxd = PXD.replace("DICT", "cdef dict __dict__" if with_dict else "")
    (tmp / f"{name}.pxd").write_text(pxd)
    cmd = [sys.executable, "-m", "Cython.Build.Cythonize", "-3", "-q", "-i", f"{name}.py"]
    subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
    so = next(tmp.glob(f"{name}.*.so"))
    loader = importlib.machinery.ExtensionFileLoader(name, str(so))
    spec = importlib.util.spec_from_file_location(name, so, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def pure(tmp: Path) -> ModuleType:
    """PROTO as plain Python."""
    path = tmp / "proto_pure.py"
    path.write_text(PROTO)
    spec = importlib.util.spec_from_file_location("proto_pure", path)
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def one_way(mod: ModuleType, n: int, shape: str) -> float:
    """msgs/s of N sends from one core to another, then the worker loop running them."""

    def msg(self: Any, i: int) -> None:
        self.n += 1
        if self.n == self.target:
            self.done = True

    gq: deque[Any] = deque()
    services: dict[int, Any] = {}
    handlers = {"msg": (msg, False)}
    if shape == "composition":

        class Receiver:
            pass

        user: Any = Receiver()
        receiver = mod.Core(2, services, gq, handlers, user)
    else:

        class SubReceiver(mod.Core):  # type: ignore[name-defined,misc]
            pass

        receiver = user = SubReceiver(2, services, gq, handlers)
    user.n, user.target, user.done = 0, n, False
    sender = mod.Core(1, services, gq, {})
    services.update({1: sender, 2: receiver})
    worker = mod.Worker()
    send = sender.send
    t0 = time.perf_counter()
    for i in range(n):
        send(2, "msg", i)
    mod.run_worker(gq, worker, True)
    elapsed = time.perf_counter() - t0
    if not user.done or receiver._n_msgs != n:
        raise RuntimeError(f"{shape}: {user.n} of {n} messages handled")
    return n / elapsed


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=500_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    gc.set_threshold(20_000)  # the node's young-generation threshold (node.node.GC_THRESHOLD)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        plain = pure(tmp)
        variants = {
            "pure": (plain, "subclass"),
            "pure_composition": (plain, "composition"),
            "native_subclass": (build(tmp, "proto_sub", True), "subclass"),
            "native_composition": (build(tmp, "proto_comp", False), "composition"),
        }
        ratios: dict[str, list[float]] = {k: [] for k in variants}
        rates: dict[str, list[float]] = {k: [] for k in variants}
        bases: list[float] = []
        for _ in range(a.rounds):
            base = baseline(a.n)
            bases.append(base)
            for name, (mod, shape) in variants.items():
                v = one_way(mod, a.n, shape)
                rates[name].append(v)
                ratios[name].append(v / base)
        emit("baseline_deque_loop", statistics.median(bases), "msgs/s")
        for name in variants:
            emit(f"proto_one_way_{name}", statistics.median(rates[name]), "msgs/s",
                 ratio_to_baseline=round(statistics.median(ratios[name]), 3),
                 ratios=[round(r, 3) for r in ratios[name]])


if __name__ == "__main__":
    main()
