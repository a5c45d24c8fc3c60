"""Build the compiled core in place: ``python -m node.core.build [--if-stale|--clean|--status]``.

Cython (a dev extra) compiles ``node/core/mailbox.py`` and ``node/core/runner.py``
with their ``.pxd`` files into extension modules next to them; the C compiler
is the machine's (gcc). ``node.core.native`` decides at import which build runs.
``scripts/bootstrap.sh`` runs this when Cython and gcc are present.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .native import MODULES, built, compiled, current

__all__ = ["build", "clean", "main"]

_HERE = Path(__file__).resolve().parent


def build() -> list[Path]:
    """Compile the modules in place with Cython and the C compiler; the built files.

    Raises ``ImportError`` without Cython and ``subprocess.CalledProcessError`` (via
    setuptools) when compiling fails.
    """
    from Cython.Build import cythonize  # dev extra; only the build needs it
    from setuptools import Distribution  # (no stubs: mypy override in pyproject.toml)

    clean()  # unlinked, not overwritten: this process may have the old build mapped
    root = _HERE.parent.parent  # the directory holding the ``node`` package
    sources = [str((_HERE / f"{n}.py").relative_to(root)) for n in MODULES]
    cwd = Path.cwd()
    os.chdir(root)  # module names (node.core.runner) come from the paths
    try:
        exts = cythonize(  # type: ignore[no-untyped-call]
            sources, quiet=True, language_level=3,
            # Types come from the .pxd files only: the .py annotations are for mypy
            # (an ``int`` annotation would make Cython reject a bool, say).
            compiler_directives={"annotation_typing": False, "binding": False},
        )
        dist = Distribution({"ext_modules": exts})
        cmd = dist.get_command_obj("build_ext")
        cmd.inplace = True
        cmd.ensure_finalized()
        cmd.run()
    finally:
        os.chdir(cwd)
        for name in MODULES:  # the generated C is a build product, not a source
            (_HERE / f"{name}.c").unlink(missing_ok=True)
    return list(built().values())


def clean() -> list[Path]:
    """Remove the built files; the ones removed."""
    gone = list(built().values())
    for path in gone:
        path.unlink()
    return gone


def main(argv: Sequence[str] | None = None) -> int:
    """Build (default), ``--clean`` or ``--status`` (which build this interpreter runs)."""
    p = argparse.ArgumentParser(prog="python -m node.core.build", description=__doc__)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--clean", action="store_true", help="remove the built files")
    g.add_argument("--status", action="store_true", help="print compiled or pure")
    g.add_argument("--if-stale", action="store_true",
                   help="build only when a module is missing or older than its sources")
    a = p.parse_args(argv)
    if a.if_stale and current():
        return 0
    if a.status:
        print("compiled" if compiled() else "pure")
    elif a.clean:
        for path in clean():
            print(f"removed {path}")
    else:
        for path in build():
            print(path)
    return 0




if __name__ == "__main__":
    sys.exit(main())
