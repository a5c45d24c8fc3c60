"""Live reload is an operator action: another node cannot start one over the harbor."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from node.message import SYSTEM
from tests.conftest import wait_for
from tests.integration.test_node_inproc import Pair, pair  # noqa: F401

pytestmark = pytest.mark.integration

SOURCE = '''
from node import Service, expose


class Target(Service):
    @expose
    def version(self):
        return "{v}"
'''


def test_a_member_cannot_trigger_a_reload_over_the_wire(pair: Pair, tmp_path: Path) -> None:  # noqa: F811
    a = pair.a
    name = "reload_wire_target"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(SOURCE.format(v="v1")))
    sys.path.insert(0, str(tmp_path))
    try:
        target = a.newservice(__import__(name).Target)
        path.write_text(textwrap.dedent(SOURCE.format(v="v2")))
        t2 = pair.transports[2]  # a member's transport, forging what a hostile peer could
        for data in (name, f"{name}:Target", [name], None):
            t2.send(1, (target, 0, 7, SYSTEM, ["reload", data]))
        wait_for(lambda: a.stats()["drops"].get("remote-event-refused", 0) >= 4)
        assert a.call(target, "version") == "v1"  # nothing was swapped or re-imported
        assert a.reload(name).swapped  # the operator's own reload still works
        assert a.call(target, "version") == "v2"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
