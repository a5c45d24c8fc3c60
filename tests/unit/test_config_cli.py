"""Node configuration (TOML + SKYMESH_* overrides) and the skymesh CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_toml_with_env_overrides(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(
        'cluster = "demo"\nnode_id = 3\nworkers = 2\n'
        '[[services]]\nclass = "examples.hello:Hello"\nargs = ["hi"]\nname = ".hello"\n'
    )
    cfg = load_config(f, env={"SKYMESH_WORKERS": "4", "SKYMESH_ZK_HOSTS": "127.0.0.1:2181"})
    assert (cfg.cluster, cfg.node_id, cfg.workers) == ("demo", 3, 4)
    assert cfg.zk_hosts == "127.0.0.1:2181" and not cfg.standalone
    assert cfg.services[0].cls == "examples.hello:Hello"
    assert cfg.services[0].args == ("hi",) and cfg.services[0].name == ".hello"
    assert load_config({}, env={"SKYMESH_WEIGHTS": "0,-1"}).weights == (0, -1)
    auto = load_config({"node_id": "auto"}, env={"SKYMESH_SERVICES": "a:B, c:D"})
    assert auto.node_id is None
    assert [s.cls for s in auto.services] == ["a:B", "c:D"]


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({"workers": 0}, {}, "workers must be >= 1"),
        ({"workers": "many"}, {}, "workers must be a number"),
        ({}, {"SKYMESH_NODE_ID": "x"}, "node_id must be an integer or 'auto'"),
        ({"node_id": 0}, {}, "node_id must be in"),
        ({"colour": "red"}, {}, "unknown config key"),
        ({"services": [{"class": "nocolon"}]}, {}, "module:Class"),
        ({"log_level": "loud"}, {}, "log_level"),
        ({"weights": [-2]}, {}, "weights must be"),
        ({}, {"SKYMESH_SERVICES": "[not json"}, "not valid JSON"),
    ],
)
def test_bad_config_is_one_clear_error(raw, env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(raw, env=env)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text("workers = = 2")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})


def _skymesh(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:  # type: ignore[type-arg]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(
        [sys.executable, "-m", "node.cli", *args],
        cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def test_cli_help() -> None:
    p = _skymesh("--help")
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 0
    assert "node" in out and "skymesh" in out


def test_cli_bad_config_exits_2_with_one_line() -> None:
    p = _skymesh("node", "--standalone", env={"SKYMESH_WORKERS": "-3"})
    out, err = p.communicate(timeout=30)
    assert p.returncode == 2
    assert err.strip().splitlines() == ["skymesh: config error: workers must be >= 1, got -3"]


def test_cli_runs_a_service_until_sigterm(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    p = _skymesh(
        "node", "--standalone", "--service", "examples.hello:Hello", "howdy", "0.05",
        env={"SKYMESH_LOG_FILE": str(log)},
    )
    try:
        deadline = time.monotonic() + 30
        while "tick:" not in (log.read_text() if log.exists() else ""):
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the Hello service never ticked"
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0
    text = log.read_text()
    assert "Hello service up" in text
    assert "Hello service stopping" in text  # on_stop ran on SIGTERM


def test_cli_failing_service_exits_nonzero() -> None:
    p = _skymesh("node", "--standalone", "--service", "examples.hello:Nope")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 1
    assert "failed to start" in err


def test_keys_init_writes_the_service_secrets_privately(tmp_path) -> None:
    """``skymesh keys init`` writes what a Swarm stack mounts as secrets: the CURVE keys,
    the console token, the ZooKeeper identity and the Redis password, all 0600."""
    import stat
    import subprocess
    import sys

    from node.config import load_config

    d = tmp_path / "keys"
    run = [sys.executable, "-m", "node.cli", "keys", "init", str(d)]
    subprocess.run(run, check=True, capture_output=True)
    zk, pw = (d / "zk_auth").read_text(), (d / "redis_password").read_text()
    assert zk.startswith("digest:skymesh:") and len(zk.strip()) > 40 and len(pw.strip()) >= 40
    for f in ("zk_auth", "redis_password", "console.token"):
        assert stat.S_IMODE((d / f).stat().st_mode) == 0o600, f
    cfg = load_config({"zk_auth_file": str(d / "zk_auth"),
                       "redis_password_file": str(d / "redis_password"),
                       "redis_url": "redis://127.0.0.1:6379/0"}, env={})
    assert cfg.zk_auth == zk.strip() and pw.strip() in (cfg.redis_url or "")
    subprocess.run([*run, "--force"], check=True, capture_output=True)  # new CURVE keys ...
    assert (d / "zk_auth").read_text() != zk  # ... and, forced, new secrets


def test_a_node_sets_the_young_gc_threshold_it_is_given() -> None:
    """Process-wide, at start; 0 leaves the interpreter's own; a negative one is refused."""
    import gc

    from node import Node
    from node.config import ConfigError, load_config
    from node.node import GC_THRESHOLD

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, *before[1:])
        with Node.standalone(workers=1, log_file="/dev/null"):
            assert gc.get_threshold() == (GC_THRESHOLD, *before[1:])
        gc.set_threshold(700, *before[1:])
        with Node.standalone(workers=1, log_file="/dev/null", gc_threshold=0):
            assert gc.get_threshold()[0] == 700
        assert load_config({}, env={"SKYMESH_GC_THRESHOLD": "5000"}).gc_threshold == 5000
        with pytest.raises(ConfigError, match="gc_threshold"):
            load_config({"gc_threshold": -1}, env={})
    finally:
        gc.set_threshold(*before)
