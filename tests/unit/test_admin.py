"""The HTTP admin endpoint on a standalone node: /metrics scraped with a real HTTP client
and parsed with prometheus_client's own parser, /healthz and /readyz, and its protections
(token off loopback, methods, paths, the request bound, a node whose workers do not answer)."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node import ConfigError, Node, Service, expose
from node.builtins import admin as admin_mod
from node.config import load_config
from tests.conftest import wait_for


class Work(Service):
    @expose
    def ok(self, x: Any) -> Any:
        return x

    @expose
    def boom(self) -> None:
        raise ValueError("boom")

    @expose
    async def later(self, x: Any) -> Any:
        await self.sleep(0.01)
        return x

    @expose
    def block(self, seconds: float) -> None:
        time.sleep(seconds)


def get(port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(port: int, token: str | None = None) -> dict[str, Any]:
    status, text = get(port, "/metrics", token)
    assert status == 200, text
    return {f.name: f for f in text_string_to_metric_families(text)}


def sample(families: dict[str, Any], family: str, name: str | None = None, **labels: str) -> float:
    """The value of the one sample of ``family`` (sample ``name``) with ``labels``."""
    found = [s.value for s in families[family].samples
             if (name is None or s.name == name)
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) == 1, (family, name, labels, families[family].samples)
    return float(found[0])


def admin_port(node: Node) -> int:
    _, port = node.call(".admin", "address")
    return int(port)


def _admin_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "skymesh-admin"]


@pytest.fixture
def anode(tmp_path: Any) -> Iterator[Node]:
    n = Node.standalone(workers=2, admin_port=0, log_file=str(tmp_path / "log"))
    try:
        yield n
    finally:
        n.stop()
    assert not _admin_threads(), "the admin thread outlived its node"


def test_metrics_are_the_nodes_figures(anode: Node) -> None:
    h = anode.newservice(Work)
    addr = next(s["address"] for s in anode.services() if s["handle"] == h)
    for i in range(5):
        assert anode.call(h, "ok", i) == i
    assert anode.call(h, "later", "x") == "x"
    with pytest.raises(Exception, match="boom"):
        anode.call(h, "boom")
    anode.send(h, "nothing-here")
    port = admin_port(anode)
    fams = wait_for(lambda: (f := scrape(port)) and sample(
        f, "skymesh_service_messages", service=addr, **{"class": "Work"}) == 8 and f)
    labels = {"service": addr, "class": "Work"}
    assert sample(fams, "skymesh_service_calls", **labels) == 7  # 5 ok, later, boom
    assert sample(fams, "skymesh_service_errors", **labels) == 2  # boom, no handler
    assert sample(fams, "skymesh_service_mailbox_length", **labels) == 0
    assert sample(fams, "skymesh_service_cpu_seconds", **labels) > 0
    assert sample(fams, "skymesh_drops", reason="no-handler") == 1
    busy = [s.value for s in fams["skymesh_worker_busy_seconds"].samples]
    assert len(busy) == 2 and sum(busy) > 0
    assert sample(fams, "skymesh_coord_session_state", state="connected") == 1
    assert sample(fams, "skymesh_coord_session_state", state="lost") == 0
    assert sample(fams, "skymesh_cluster_members") == 1
    assert sample(fams, "skymesh_offload_threads") == 4
    assert fams["skymesh_remote_call_seconds"].type == "histogram"
    assert sample(fams, "skymesh_remote_call_seconds", "skymesh_remote_call_seconds_count") == 0
    assert sample(fams, "skymesh_node_info", node=str(anode.node_id)) == 1
    assert sample(fams, "skymesh_admin_requests", outcome="metrics") >= 1


def test_offload_queue_is_seen(anode: Node) -> None:
    release = threading.Event()

    class Offloader(Service):
        @expose
        async def run(self) -> bool:
            return await self.offload(release.wait, 10)  # type: ignore[no-any-return]

    h = anode.newservice(Offloader)
    done: list[Any] = []
    threads = [threading.Thread(target=lambda: done.append(anode.call(h, "run")))
               for _ in range(6)]
    for t in threads:
        t.start()
    port = admin_port(anode)
    try:
        wait_for(lambda: sample(scrape(port), "skymesh_offload_queued") == 2)
        assert sample(scrape(port), "skymesh_offload_running") == 4
    finally:
        release.set()
        for t in threads:
            t.join(10)
    assert done == [True] * 6
    assert sample(scrape(port), "skymesh_offload_done") == 6


def test_health_and_ready(anode: Node) -> None:
    port = admin_port(anode)
    assert get(port, "/healthz") == (200, "ok\n")
    assert get(port, "/readyz") == (200, "ok\n")


def test_healthz_fails_when_the_workers_do_not_answer(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin_mod, "HEALTH_DEADLINE", 0.5)
    with Node.standalone(workers=1, admin_port=0, log_file=str(tmp_path / "log")) as n:
        port = admin_port(n)
        h = n.newservice(Work)
        n.send(h, "block", 2.0)  # the only worker is busy for 2 s
        time.sleep(0.1)
        status, text = get(port, "/healthz")
        assert status == 503 and "no answer through the workers" in text
        assert get(port, "/readyz")[0] == 503
        wait_for(lambda: get(port, "/healthz")[0] == 200, timeout=10)


def test_methods_paths_and_the_request_bound(anode: Node) -> None:
    port = admin_port(anode)
    assert get(port, "/metrics", method="POST")[0] == 405
    assert get(port, "/metrics", method="DELETE")[0] == 405
    assert get(port, "/nope")[0] == 404
    assert get(port, "/../etc/passwd")[0] == 404
    svc = anode.service(anode.resolve(".admin"))
    slots = svc._slots  # type: ignore[union-attr]
    for _ in range(admin_mod.MAX_REQUESTS):  # every request slot taken
        assert slots.acquire(blocking=False)
    try:
        status, text = get(port, "/healthz")
        assert status == 503 and text.startswith("busy")
    finally:
        for _ in range(admin_mod.MAX_REQUESTS):
            slots.release()
    assert get(port, "/healthz")[0] == 200
    assert sample(scrape(port), "skymesh_admin_requests", outcome="busy") == 1


def test_off_loopback_needs_a_token(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match="off loopback: set console_token"):
        Node(admin_port=0, admin_bind="0.0.0.0")
    with pytest.raises(ConfigError, match="off loopback: set console_token"):
        load_config({"admin_port": 0, "admin_bind": "0.0.0.0"}, env={})
    with pytest.raises(ConfigError, match="off loopback"):
        load_config({}, env={"SKYMESH_ADMIN_PORT": "9100", "SKYMESH_ADMIN_BIND": "::"})
    ok = load_config({"admin_port": 0, "admin_bind": "0.0.0.0", "console_token": "t"}, env={})
    assert ok.admin_bind == "0.0.0.0"
    assert load_config({"admin_port": 0, "admin_bind": "::1"}, env={}).admin_bind == "::1"
    assert not _admin_threads()


def test_cli_refuses_in_one_line(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "SKYMESH_ADMIN_PORT": "0", "SKYMESH_ADMIN_BIND": "0.0.0.0"}
    env.pop("SKYMESH_CONSOLE_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "node.cli", "node", "--standalone"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    line = ("skymesh: config error: admin_bind 0.0.0.0 is off loopback: set console_token "
            "(the admin endpoint then asks for 'Authorization: Bearer <token>')")
    assert proc.stderr.strip().splitlines() == [line]


def test_off_loopback_refuses_requests_without_the_token(tmp_path: Any) -> None:
    token = "s3cret-token"
    with Node.standalone(admin_port=0, admin_bind="0.0.0.0", console_token=token,
                         log_file=str(tmp_path / "log")) as n:
        port = admin_port(n)
        for path in ("/metrics", "/healthz", "/readyz", "/nope"):
            status, text = get(port, path)  # bound on 0.0.0.0, reached on 127.0.0.1
            assert status == 401 and "skymesh_" not in text
            assert get(port, path, token="wrong")[0] == 401
            assert get(port, path, token=token[:-1])[0] == 401
        assert get(port, "/healthz", token=token) == (200, "ok\n")
        fams = scrape(port, token)
        assert sample(fams, "skymesh_admin_requests", outcome="unauthorized") == 12
    assert not _admin_threads()


def test_loopback_binding_needs_no_token(tmp_path: Any) -> None:
    with Node.standalone(admin_port=0, console_token="t", log_file=str(tmp_path / "log")) as n:
        assert get(admin_port(n), "/healthz") == (200, "ok\n")


def test_admin_config_keys_and_env() -> None:
    env = {"SKYMESH_ADMIN_PORT": "9102", "SKYMESH_ADMIN_BIND": "0.0.0.0",
           "SKYMESH_TRACING": "true", "SKYMESH_CONSOLE_TOKEN": "t"}
    cfg = load_config({}, env=env)
    assert (cfg.admin_port, cfg.admin_bind, cfg.tracing) == (9102, "0.0.0.0", True)
    defaults = load_config({}, env={})
    assert (defaults.admin_port, defaults.admin_bind, defaults.tracing) == (None, "127.0.0.1",
                                                                           False)
    assert load_config({"tracing": False}, env={"SKYMESH_TRACING": "off"}).tracing is False
    with pytest.raises(ConfigError, match="tracing must be true or false"):
        load_config({"tracing": "maybe"}, env={})
    with pytest.raises(ConfigError, match="tracing must be true or false"):
        load_config({}, env={"SKYMESH_TRACING": "2"})
    with pytest.raises(ConfigError, match="admin_port must be"):
        load_config({"admin_port": "x"}, env={})
