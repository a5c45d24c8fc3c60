"""Shared fixtures: a standalone node per test, and a check that nothing is left running."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node import Node


def _skymesh_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("skymesh")]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "node.log"


@pytest.fixture
def node(log_path: Path) -> Iterator[Node]:
    """A started standalone node with two workers, stopped (and its threads joined) after."""
    n = Node.standalone(workers=2, log_file=str(log_path), call_timeout=10.0)
    try:
        yield n
    finally:
        n.stop()
    deadline = time.monotonic() + 5
    while _skymesh_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _skymesh_threads(), f"threads left behind: {_skymesh_threads()}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free on ``host`` now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)
