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


def test_json_log_format_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    import json

    from node import load_config

    monkeypatch.setenv("SKYMESH_LOG_FORMAT", "json")
    log = tmp_path / "node.jsonl"
    cfg = load_config({"log_file": str(log), "node_id": 1})
    assert cfg.log_format == "json"
    n = Node.from_config(cfg)
    try:
        h = n.newservice(Chatty)
        n.call(h, "say", "line one\nline two")
        wait_for(lambda: "line one" in log.read_text())
    finally:
        n.stop()
    records = [json.loads(x) for x in log.read_text().splitlines()]
    said = [r for r in records if r["message"].startswith("line one")]
    assert said and said[0]["message"] == "line one\nline two"
    assert set(said[0]) == {"time", "node", "service", "level", "message"}
    assert said[0]["node"] == 1 and said[0]["level"] == "info"


def test_bad_log_format_is_a_config_error() -> None:
    from node import ConfigError, load_config

    with pytest.raises(ConfigError, match="log_format"):
        load_config({"log_format": "yaml"}, env={})
