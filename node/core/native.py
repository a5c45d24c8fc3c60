"""The optional compiled core: ``mailbox`` and ``runner`` built by Cython (issue 13).

The two modules are written once, in Python, and each has a ``.pxd`` beside it
(Cython's "pure Python mode"): the ``.pxd`` makes ``Mailbox``, ``ServiceCore``
and ``Task`` native classes with C fields and types the dispatch path, so a
message's way through the scheduler's busy path, the mailbox and the runner is
C calls on C fields. Without a build (no Cython or no C compiler) the same
``.py`` files run as they are; the behaviour is the same, only slower. The
mailbox's ordering argument (``node.core.mailbox``) holds in both builds.

It is built in place, next to the sources, by ``python -m node.core.build``
(``scripts/bootstrap.sh`` runs it when Cython and gcc are there).

Which build runs:

- ``SKYMESH_PURE=1`` in the environment: the pure-Python core, even if built
  (the test suite runs once each way, ``scripts/test.sh``);
- otherwise the compiled modules when they are there and not older than their
  ``.py`` or ``.pxd`` (a stale build is skipped with a warning on stderr, never
  run: an edit to ``runner.py`` must not be shadowed by yesterday's ``.so``).

Importing this module applies the choice (:func:`select`);
``node/core/__init__.py`` imports it before the two modules.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

__all__ = ["MODULES", "built", "compiled", "current", "select"]

# The compiled modules, in cimport order (runner cimports mailbox's Mailbox).
MODULES = ("mailbox", "runner")
_HERE = Path(__file__).resolve().parent
_PACKAGE = __name__.rpartition(".")[0]  # "node.core"
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def built() -> dict[str, Path]:
    """The compiled module files present next to their sources (name -> path)."""
    found: dict[str, Path] = {}
    for name in MODULES:
        for suffix in _SUFFIXES:
            path = _HERE / f"{name}{suffix}"
            if path.exists():
                found[name] = path
                break
    return found


def current() -> bool:
    """Whether every module is built and no build is older than its sources."""
    found = built()
    return len(found) == len(MODULES) and not any(_stale(n, p) for n, p in found.items())


def _stale(name: str, path: Path) -> bool:
    built_at = path.stat().st_mtime
    return any(
        src.exists() and src.stat().st_mtime > built_at
        for src in (_HERE / f"{name}.py", _HERE / f"{name}.pxd")
    )


class _SourceFirst(importlib.abc.MetaPathFinder):
    """Imports the ``.py`` of the compiled modules, shadowing the built files."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != _PACKAGE or name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / f"{name}.py")


def select() -> None:
    """Choose the build the next import of the core's modules gets (see the module doc).

    Both modules go the same way: a compiled ``runner`` needs the compiled ``Mailbox``.
    Idempotent.
    """
    if any(isinstance(f, _SourceFirst) for f in sys.meta_path):
        return
    found = built()
    pure = os.environ.get("SKYMESH_PURE", "") not in ("", "0")
    if not pure and found:
        stale = sorted(n for n, p in found.items() if _stale(n, p))
        missing = sorted(set(MODULES) - set(found))
        if not stale and not missing:
            return
        why = f"stale: {', '.join(stale)}" if stale else f"missing: {', '.join(missing)}"
        print(f"skymesh: the compiled core is {why}; running the pure-Python core "
              "(python -m node.core.build)", file=sys.stderr)
    if found:
        sys.meta_path.insert(0, _SourceFirst())


def compiled() -> bool:
    """Whether this interpreter runs the compiled core."""
    from . import mailbox, runner

    return all(m.__file__ is not None and m.__file__.endswith(_SUFFIXES)
               for m in (mailbox, runner))


select()  # importing this module applies the choice (node/core/__init__.py imports it first)
