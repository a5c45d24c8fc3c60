"""Misspelt settings are refused at start: unknown SKYMESH_* variables and TOML keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.config import ENV_NOT_CONFIG, load_config
from node.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("name", "nearest"),
    [
        ("SKYMESH_ZK_HOST", "SKYMESH_ZK_HOSTS"),
        ("SKYMESH_REDIS_UR", "SKYMESH_REDIS_URL"),
        ("SKYMESH_WORKRES", "SKYMESH_WORKERS"),
        ("SKYMESH_CONSOLE_TOKNE", "SKYMESH_CONSOLE_TOKEN"),  # a security setting left off
        ("SKYMESH_LOGLEVEL", "SKYMESH_LOG_LEVEL"),
    ],
)
def test_misspelt_env_variable_is_an_error_naming_the_nearest_key(name: str, nearest: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config({}, env={name: "x", "SKYMESH_WORKERS": "3"})
    text = str(err.value)
    assert "\n" not in text
    assert text == f"unknown environment variable {name} (did you mean {nearest}?)"


def test_unrelated_unknown_env_variable_says_where_the_keys_are() -> None:
    with pytest.raises(ConfigError, match=r"^unknown environment variable SKYMESH_QQQ; settings"):
        load_config({}, env={"SKYMESH_QQQ": "1"})


def test_known_settings_allow_list_and_other_variables_pass() -> None:
    env = dict.fromkeys(ENV_NOT_CONFIG, "whatever")
    env |= {"SKYMESH_WORKERS": "3", "SKYMESH_CLUSTER": "c", "PATH": "/bin", "SKYMESHX": "1"}
    cfg = load_config({}, env=env)
    assert (cfg.workers, cfg.cluster) == (3, "c")


def test_misspelt_toml_key_is_an_error_naming_the_nearest_key(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text('cluster = "x"\nzk_host = "127.0.0.1:2181"\n')
    with pytest.raises(ConfigError) as err:
        load_config(f, env={})
    assert str(err.value) == "unknown config key(s): zk_host (did you mean zk_hosts?)"


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("SKYMESH_")}
    full |= env | {"PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "node.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_node_with_a_misspelt_variable_refuses_to_start_with_one_line() -> None:
    # The attack: a typo in a setting would have silently left it at its default.
    p = _cli("node", "--standalone", "--service", "examples.hello:Hello",
             env={"SKYMESH_CONSOLE_TOKNE": "s3cret"})
    assert p.returncode == 2
    line = ("skymesh: config error: unknown environment variable SKYMESH_CONSOLE_TOKNE "
            "(did you mean SKYMESH_CONSOLE_TOKEN?)")
    assert p.stderr.strip().splitlines() == [line]


def test_health_with_a_misspelt_variable_fails_too() -> None:
    p = _cli("health", env={"SKYMESH_ZK_HOST": "127.0.0.1:1"})
    assert p.returncode == 2
    assert "unknown environment variable SKYMESH_ZK_HOST" in p.stderr


# Files where the project itself sets or reads SKYMESH_* variables.
_SCANNED = ("*.sh", "*.yml", "*.yaml", "Dockerfile", "*.py", "*.md", "run")
_NAME = re.compile(r"\bSKYMESH_[A-Z0-9_]*[A-Z0-9]\b(?![<*])")


def test_every_skymesh_variable_the_project_uses_is_known() -> None:
    """The allow-list is complete: no script, compose file or test trips the check."""
    known = {f"SKYMESH_{f.upper()}" for f in load_config({}, env={}).__dataclass_fields__}
    known |= ENV_NOT_CONFIG
    here = Path(__file__).resolve()
    used: dict[str, Path] = {}
    for pattern in _SCANNED:
        for path in ROOT.rglob(pattern):
            rel = path.relative_to(ROOT).parts
            if path == here or rel[0].startswith(".") or not path.is_file():
                continue
            for name in _NAME.findall(path.read_text(encoding="utf-8", errors="replace")):
                used.setdefault(name, path)
    assert "SKYMESH_ZK_PORT" in used and "SKYMESH_PYTHON_IMAGE" in used  # the scan sees them
    unknown = {n: str(p.relative_to(ROOT)) for n, p in used.items() if n not in known}
    assert not unknown, f"add these to node.config.ENV_NOT_CONFIG or NodeConfig: {unknown}"
