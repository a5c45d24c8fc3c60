"""deploy/stack.yml on a single-node Docker Swarm the test creates (issue 15).

The test initialises a swarm on loopback (``docker swarm init --advertise-addr
127.0.0.1``), deploys the stack with cluster credentials as Swarm secrets
(``skymesh keys init``: one shared cluster key, ``node_id = auto``), scales the
node service 3 -> 6 -> 3 and checks after each step that ZooKeeper's
membership and the ``demo.<id>`` names follow and that every node answers
calls, including a call one node makes to another. The stack is removed and
the swarm left (``docker swarm leave --force``) whatever happens. Skipped
when no Docker engine answers (tests/e2e/conftest.py), or when this engine
is already part of a swarm (not ours to leave).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.compose_helpers import _ZK_DUMP as _COMPOSE_ZK_DUMP
from tests.e2e.compose_helpers import ROOT, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

# The stack mounts the ZooKeeper identity as a Swarm secret (the compose files, in a volume).
_ZK_DUMP = _COMPOSE_ZK_DUMP.replace("/secrets/zk_auth", "/run/secrets/zk_auth")
assert _ZK_DUMP != _COMPOSE_ZK_DUMP

STACK = f"skye2e{uuid.uuid4().hex[:6]}"
NODE_SERVICE = f"{STACK}_node"
ZK = "zookeeper:2181"
CLUSTER = "e2e"
ZROOT = f"/skymesh/{CLUSTER}"

# Runs inside a node container: a short-lived client node (id auto, the container's
# cluster key) makes each call and prints one JSON result per call.
_CALLS = """
import json, os, socket, sys, time
from node import Node, load_config
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("zookeeper", 2181))
cfg = load_config({"cluster": os.environ["SKYMESH_CLUSTER"], "node_id": "auto",
                   "zk_hosts": os.environ["SKYMESH_ZK_HOSTS"], "bind": "0.0.0.0",
                   "advertise": s.getsockname()[0], "log_level": "error",
                   "zk_auth_file": "/run/secrets/zk_auth",
                   "keys_dir": os.environ["SKYMESH_KEYS_DIR"]}, env={})
node = Node.from_config(cfg)
time.sleep(1.0)  # the members' membership watches see this client first
out = []
try:
    for dest, method, *args in json.loads(sys.argv[1]):
        try:
            out.append({"ok": node.call(dest, method, *args, timeout=15)})
        except Exception as exc:
            out.append({"error": type(exc).__name__, "message": str(exc)})
finally:
    node.stop()
print(json.dumps(out))
"""


def docker(*args: str, timeout: float = 300, check: bool = True,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout,
                          check=False, env=env)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({proc.returncode}): "
                           f"{proc.stderr[-3000:]}{proc.stdout[-1000:]}")
    return proc


def swarm_state() -> str:
    return docker("info", "--format", "{{.Swarm.LocalNodeState}}").stdout.strip()


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    """A single-node swarm on loopback for this module, left afterwards."""
    state = swarm_state()
    if state != "inactive":
        pytest.skip(f"this Docker engine is already in a swarm ({state}); the test creates "
                    "and leaves its own, so it does not touch that one")
    init = docker("swarm", "init", "--advertise-addr", "127.0.0.1", check=False, timeout=120)
    if init.returncode != 0:
        docker("swarm", "leave", "--force", check=False)
        pytest.skip(f"docker swarm init failed here: {init.stderr.strip()[-500:]}")
    try:
        yield
    finally:
        docker("swarm", "leave", "--force", check=False, timeout=120)


@pytest.fixture(scope="module")
def node_image(image_env: dict[str, str]) -> str:
    """The node image built from this checkout on the (stand-in) python image."""
    # One tag, replaced by each run and never removed: removing it would drop the
    # layers a concurrent or later build's cache names as parents.
    tag = "skymesh:swarm-e2e"
    args = ["build", "-q", "-f", "deploy/Dockerfile", "-t", tag]
    if "SKYMESH_PYTHON_IMAGE" in image_env:
        args += ["--build-arg", f"SKYMESH_PYTHON_IMAGE={image_env['SKYMESH_PYTHON_IMAGE']}"]
    for extra in ([], ["--no-cache"]):  # a cache whose parent vanished: build afresh
        proc = subprocess.run(["docker", *args, *extra, "."], cwd=ROOT, capture_output=True,
                              text=True, timeout=900, check=False)
        if proc.returncode == 0:
            return tag
    pytest.fail(f"docker build failed: {proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def stack(swarm: None, node_image: str, image_env: dict[str, str],
          tmp_path_factory: pytest.TempPathFactory,
          request: pytest.FixtureRequest) -> Iterator[None]:
    keys = tmp_path_factory.mktemp("swarm") / "keys"
    subprocess.run([sys.executable, "-m", "node.cli", "keys", "init", str(keys)], cwd=ROOT,
                   check=True, capture_output=True)
    env = {**os.environ, **image_env, "SKYMESH_IMAGE": node_image, "SKYMESH_KEYS": str(keys),
           "SKYMESH_CLUSTER": CLUSTER}
    failed_before = request.session.testsfailed
    try:
        docker("stack", "deploy", "-c", str(ROOT / "deploy" / "stack.yml"), STACK, env=env)
        yield
    finally:
        if request.session.testsfailed > failed_before:
            for svc in ("node", "zookeeper", "redis"):
                logs = docker("service", "logs", "--tail", "60", f"{STACK}_{svc}",
                              check=False, timeout=60)
                print(f"===== {STACK}_{svc} =====\n{logs.stdout[-6000:]}{logs.stderr[-2000:]}")
        docker("stack", "rm", STACK, check=False)
        # The stack's network goes once its containers are gone; wait so the swarm
        # leaves cleanly.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and docker(
                "ps", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}",
                check=False).stdout.strip():
            time.sleep(1)


def node_containers() -> list[str]:
    out = docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={NODE_SERVICE}",
                 "--filter", "status=running").stdout
    return out.split()


def exec_py(container: str, script: str, *args: str) -> str:
    proc = docker("exec", container, "python", "-c", script, *args, check=False, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"exec in {container[:12]} failed: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def tree() -> dict[str, Any]:
    for c in node_containers():
        try:
            return json.loads(exec_py(c, _ZK_DUMP, ZK, f"{ZROOT}/nodes", f"{ZROOT}/names"))
        except RuntimeError:
            continue  # a container stopping under us: ask another
    return {}


def settled(n: int) -> set[int] | None:
    """The member ids when exactly ``n`` nodes are members, each with its demo name,
    and ``n`` node containers run; else None."""
    if len(node_containers()) != n:
        return None
    t = tree()
    nodes = t.get(f"{ZROOT}/nodes") or {}
    names = t.get(f"{ZROOT}/names") or {}
    ids = {int(k) for k in nodes}
    if len(ids) != n or not {f"demo.{i}" for i in ids} <= set(names):
        return None
    return ids


def calls_answer(ids: set[int]) -> None:
    """Every node's demo answers, and each asks the next one (a node-to-node call)."""
    order = sorted(ids)
    calls = [[f"demo.{i}", "whoami"] for i in order]
    calls += [[f"demo.{a}", "ask", f"demo.{b}"] for a, b in zip(order, order[1:] + order[:1],
                                                                 strict=True)]
    results = json.loads(exec_py(node_containers()[0], _CALLS, json.dumps(calls)))
    errors = [(c, r) for c, r in zip(calls, results, strict=True) if "ok" not in r]
    assert not errors, errors
    whoami = results[:len(order)]
    assert [r["ok"]["node"] for r in whoami] == order
    asked = results[len(order):]
    assert [r["ok"]["answer"]["node"] for r in asked] == order[1:] + order[:1]


def scale_to(n: int) -> set[int]:
    docker("service", "scale", "--detach", f"{NODE_SERVICE}={n}")
    return wait_until(f"{n} nodes with their names", lambda: settled(n), 240, 2.0)


def test_stack_scales_3_6_3_and_membership_and_calls_follow(stack: None) -> None:
    three = wait_until("3 nodes with their names", lambda: settled(3), 300, 2.0)
    calls_answer(three)

    six = scale_to(6)
    assert three <= six  # the first three kept their ids and sessions
    calls_answer(six)

    back = scale_to(3)
    assert back <= six
    calls_answer(back)
    # The three removed nodes' names are gone with them.
    names = tree().get(f"{ZROOT}/names") or {}
    assert {n for n in names if n.startswith("demo.")} == {f"demo.{i}" for i in back}


def test_secrets_reach_the_node_only_as_a_private_keys_dir(stack: None) -> None:
    """The harbor runs with the cluster key: the keys dir is 0700 and its secret 0600,
    owned by the node's user, and the raw secrets are readable by that user alone."""
    c = node_containers()[0]
    script = (
        "import os, stat, json; d = os.environ['SKYMESH_KEYS_DIR']; "
        "m = lambda p: oct(stat.S_IMODE(os.stat(p).st_mode)); "
        "print(json.dumps({'dir': m(d), 'secret': m(d + '/secret/cluster.key_secret'), "
        "'raw': m('/run/secrets/cluster.key_secret'), 'uid': os.getuid(), "
        "'owner': os.stat(d).st_uid}))"
    )
    info = json.loads(exec_py(c, script))
    assert info == {"dir": "0o700", "secret": "0o600", "raw": "0o400", "uid": 10001,
                    "owner": 10001}


def test_a_client_without_the_cluster_key_gets_no_answer(stack: None) -> None:
    """Attack: a client node on the overlay network without credentials joins ZooKeeper
    (open here) but the members' CURVE harbors refuse its frames."""
    script = _CALLS.replace('"keys_dir": os.environ["SKYMESH_KEYS_DIR"]', '"insecure": True')
    assert script != _CALLS
    ids = settled(3) or wait_until("3 nodes", lambda: settled(3), 240, 2.0)
    out = json.loads(exec_py(node_containers()[0], script,
                             json.dumps([[f"demo.{min(ids)}", "ping"]])))
    assert "ok" not in out[0], out


# Runs inside a node container: what a client on the overlay network without the
# secrets gets from ZooKeeper and Redis, and what the nodes' Redis password gets.
_WITHOUT_SECRETS = r"""
import json, socket, sys
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
zk = KazooClient(hosts="zookeeper:2181", timeout=5.0)
zk.start(timeout=15)
try:
    zk.get_children(sys.argv[1])
    zk_out = "read"
except NoAuthError:
    zk_out = "NoAuth"
zk.stop(); zk.close()

def redis(*commands):
    s = socket.create_connection(("redis", 6379), timeout=5)
    for c in commands:
        words = c.split()
        s.sendall(b"*%d\r\n" % len(words)
                  + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words))
    out = b""
    while out.count(b"\r\n") < len(commands):
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()

pw = open("/run/secrets/redis_password").read().strip()
print(json.dumps({"zk": zk_out, "redis": redis("GET x"), "redis_pw": redis("AUTH " + pw, "PING")}))
"""


def test_zookeeper_and_redis_refuse_whoever_lacks_the_secrets(stack: None) -> None:
    """Attack from inside the overlay network: a ZooKeeper client without the cluster's
    digest identity cannot read its znodes; a Redis client without the password is
    refused (NOAUTH) while the nodes' own password works."""
    settled(3) or wait_until("3 nodes", lambda: settled(3), 240, 2.0)
    out = json.loads(exec_py(node_containers()[0], _WITHOUT_SECRETS, f"{ZROOT}/nodes"))
    assert out["zk"] == "NoAuth", out
    assert out["redis"].startswith("-NOAUTH"), out
    assert out["redis_pw"] == "+OK\r\n+PONG\r\n", out
