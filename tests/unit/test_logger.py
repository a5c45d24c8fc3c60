"""``.logger``: reached only through the node's log path, one record per line."""

from __future__ import annotations

from pathlib import Path

import pytest

from node import CallError, Node, Service, expose
from tests.conftest import wait_for


class Chatty(Service):
    @expose
    def say(self, text: str) -> None:
        self.log(text)


def test_log_text_cannot_forge_a_second_record(node: Node, log_path: Path) -> None:
    h = node.newservice(Chatty)
    forged = "hello\n2026-01-01T00:00:00.000Z node=9 :0000000900000001 ERROR pwned\r\x1b[2J"
    node.call(h, "say", forged)
    wait_for(lambda: "hello" in log_path.read_text())
    lines = [x for x in log_path.read_text().splitlines() if "hello" in x or "pwned" in x]
    assert len(lines) == 1
    assert "hello\\n2026-01-01" in lines[0] and "\\r\\x1b[2J" in lines[0]
    records = log_path.read_text().splitlines()
    assert not any(x.startswith("2026-01-01T00:00:00.000Z node=9") for x in records)


def test_the_logger_exposes_no_write_handler(node: Node, log_path: Path) -> None:
    with pytest.raises(CallError) as info:
        node.call(".logger", "write", 0.0, 0, "error", "from a message")
    assert info.value.remote_type == "NoHandler"
    assert "from a message" not in log_path.read_text()
