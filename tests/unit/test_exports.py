"""The public API: ``node`` re-exports exactly its public names, each defined once."""

from __future__ import annotations

import importlib

import node


def test_all_names_exist_and_are_documented() -> None:
    for name in node.__all__:
        obj = getattr(node, name)
        assert obj.__doc__, f"{name} has no docstring"


def test_no_extra_public_names() -> None:
    public = {n for n in dir(node) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(node, n)).__name__ == "module"}
    assert public - modules == set(node.__all__)


def test_each_public_name_comes_from_one_module() -> None:
    homes: dict[str, str] = {}
    for name in node.__all__:
        obj = getattr(node, name)
        home = getattr(obj, "__module__", None)
        assert home is not None and (home.startswith("node.") or home == "coord.errors"), name
        homes[name] = home
        mod = importlib.import_module(home)
        assert getattr(mod, name) is obj
