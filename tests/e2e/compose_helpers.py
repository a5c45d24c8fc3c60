"""A docker compose project driven from the tests: build, up, wait, inspect, tear down.

Works with ``docker compose`` (v2) and ``docker-compose`` 1.29. Containers are
found by compose's labels (``com.docker.compose.project``/``.service``), so
the naming difference between the two (``p_node1_1`` vs ``p-node1-1``) does
not matter. ZooKeeper is read from inside a node container, with the kazoo
the image already has: nothing on the host needs to reach a container.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from docker.models.containers import Container

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Where the compose files' `init` service puts the secrets, as the node containers see them.
SECRETS = "/secrets"

# Runs inside a node container: prints {path: {child: data-or-null}} for each path
# (null for a path that does not exist). Data is decoded as JSON when it is. Reads
# as the cluster's ZooKeeper identity (the tree's ACL lets nobody else read it).
_ZK_DUMP = """
import json, sys
from kazoo.client import KazooClient
scheme, _, cred = open("/secrets/zk_auth").read().strip().partition(":")
zk = KazooClient(hosts=sys.argv[1], timeout=5.0, auth_data=[(scheme, cred)])
zk.start(timeout=15)
out = {}
for path in sys.argv[2:]:
    if not zk.exists(path):
        out[path] = None
        continue
    kids = {}
    for kid in zk.get_children(path):
        try:
            data = zk.get(f"{path}/{kid}")[0].decode()
            kids[kid] = json.loads(data) if data else None
        except Exception:
            kids[kid] = None
    out[path] = kids
zk.stop(); zk.close()
print(json.dumps(out))
"""

# Runs inside a node container: starts a short-lived client node (id "auto") in the
# cluster, makes each call [dest, method, args...] and prints one JSON result per
# call: {"ok": value} or {"error": exception type name, "message": text}.
_CALLS = """
import json, sys, time
from node import Node, load_config
cluster, zk_hosts, advertise, calls = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
# The cluster's credentials from the secrets volume: the shared CURVE key (any node
# id, so "auto" works) and the ZooKeeper identity.
cfg = load_config({"cluster": cluster, "node_id": "auto", "zk_hosts": zk_hosts,
                   "bind": "0.0.0.0", "advertise": advertise, "log_level": "error",
                   "keys_dir": "/secrets/keys", "zk_auth_file": "/secrets/zk_auth"}, env={})
node = Node.from_config(cfg)
# The members' harbors drop frames from a node their membership watch has not shown
# them yet (a join race, reported): give the watches a moment before the first call.
time.sleep(1.0)
out = []
try:
    for dest, method, *args in json.loads(calls):
        t0 = time.monotonic()
        try:
            out.append({"ok": node.call(dest, method, *args, timeout=10)})
        except Exception as exc:
            out.append({"error": type(exc).__name__, "message": str(exc)})
        out[-1]["seconds"] = time.monotonic() - t0
finally:
    node.stop()
print(json.dumps(out))
"""


def compose_command() -> list[str]:
    """``docker compose`` when the v2 plugin exists, else ``docker-compose``."""
    override = os.environ.get("SKYMESH_COMPOSE")
    if override:
        return override.split()
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("neither `docker compose` (v2) nor `docker-compose` (1.29) is installed")


def wait_until(what: str, fn: Callable[[], T], timeout: float, interval: float = 1.0) -> T:
    """Poll ``fn`` until it returns something truthy; fail naming ``what`` (and the
    last value or error seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except Exception as exc:  # a container restarting mid-poll: keep polling
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; "
                                 f"last: {last!r}")
        time.sleep(interval)


class ComposeProject:
    """One compose project with a unique name; ``down -v`` removes everything it made."""

    def __init__(self, files: Sequence[str], name: str, env: Mapping[str, str]) -> None:
        self.name = name
        self.env = {**os.environ, **env}
        self.cmd = [*compose_command(), *(a for f in files for a in ("-f", str(ROOT / f))),
                    "-p", name]
        import docker  # here, not at import: without the SDK the e2e tests skip, not error

        self.docker = docker.from_env()

    def run(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        proc = subprocess.run([*self.cmd, *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        return proc.stdout + proc.stderr

    def up(self) -> None:
        self.run("build")
        # Rebuilds leave the previous node image untagged: drop those (only ours).
        self.docker.images.prune(filters={"dangling": True, "label": "org.skymesh.image=node"})
        self.run("up", "-d")

    def down(self) -> None:
        self.run("down", "-v", "--remove-orphans", "--timeout", "10", timeout=180, check=False)

    def logs(self, tail: int = 150) -> str:
        return self.run("logs", "--no-color", f"--tail={tail}", timeout=60, check=False)

    def container(self, service: str) -> Container:
        found = self.docker.containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={self.name}", f"com.docker.compose.service={service}"]})
        if len(found) != 1:
            raise LookupError(f"{len(found)} containers for service {service}")
        return found[0]

    def network(self) -> Any:
        (net,) = self.docker.networks.list(
            filters={"label": f"com.docker.compose.project={self.name}"})
        return net

    def status(self, service: str) -> str:
        """``running``, ``exited``, ...; plus ``/healthy`` etc. when there is a healthcheck."""
        c = self.container(service)
        c.reload()
        health = c.attrs["State"].get("Health", {}).get("Status")
        return f"{c.status}/{health}" if health else c.status

    def exec(self, service: str, *cmd: str) -> tuple[int, str]:
        code, out = self.container(service).exec_run(list(cmd), demux=False)
        return code, out.decode(errors="replace")

    def exec_as(self, service: str, user: str, *cmd: str) -> tuple[int, str]:
        """``exec`` as ``user`` (e.g. "0": root, with the container's capabilities)."""
        code, out = self.container(service).exec_run(list(cmd), user=user, demux=False)
        return code, out.decode(errors="replace")

    def redis_cli(self, service: str, *args: str) -> tuple[int, str]:
        """``redis-cli ARGS`` in a Redis or Sentinel container, authenticated with the
        generated password (read from the volume there, never on a command line)."""
        script = 'REDISCLI_AUTH="$(cat /redis-secrets/redis_password)" exec redis-cli "$@"'
        return self.exec(service, "sh", "-c", script, "redis-cli", *args)

    def assert_locked_down(self, service: str) -> None:
        """The container of ``service`` runs read-only (even root cannot write ``/``), with
        no capabilities, no privilege gain, memory and pids limits, and not as root."""
        code, out = self.exec_as(service, "0", "touch", "/x")
        assert code != 0 and "Read-only file system" in out, (service, out)
        code, out = self.exec(service, "grep", "-E", "^(Cap|NoNewPrivs)", "/proc/1/status")
        status = dict(line.split(":\t") for line in out.strip().splitlines())
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            assert status[cap] == "0000000000000000", (service, status)
        assert status["NoNewPrivs"] == "1", (service, status)
        host = self.container(service).attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], service
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        assert host["Memory"] > 0 and host["PidsLimit"] > 0, service
        code, out = self.exec(service, "id", "-u")
        assert code == 0 and out.strip() != "0", (service, out)

    def zk(self, via: str, hosts: str, *paths: str) -> dict[str, dict[str, Any] | None]:
        """Children (with decoded data) of ZooKeeper ``paths``, read from inside ``via``."""
        code, out = self.exec(via, "python", "-c", _ZK_DUMP, hosts, *paths)
        if code != 0:
            raise RuntimeError(f"reading ZooKeeper from {via} failed: {out[-2000:]}")
        result: dict[str, dict[str, Any] | None] = json.loads(out.strip().splitlines()[-1])
        return result

    def calls(self, via: str, cluster: str, zk_hosts: str,
              calls: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
        """Make ``calls`` ([dest, method, *args] each) from a client node started in the
        container of ``via`` (advertised by that service's name); one result per call."""
        code, out = self.exec(via, "python", "-c", _CALLS, cluster, zk_hosts, via,
                              json.dumps([list(c) for c in calls]))
        if code != 0:
            raise RuntimeError(f"client node in {via} failed: {out[-3000:]}")
        result: list[dict[str, Any]] = json.loads(out.strip().splitlines()[-1])
        return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def compose_up(request: pytest.FixtureRequest, files: Sequence[str], image_env: Mapping[str, str],
               kind: str) -> Iterator[ComposeProject]:
    """Build and start a project named ``skymesh-e2e-<kind>-<random>`` (cluster name
    ``e2e``); always take it down, printing its logs if starting it or a test failed."""
    # The lobby page's host port: a free one unless the caller chose (8080 may be taken).
    web = os.environ.get("SKYMESH_WEB_PORT") or str(_free_port())
    project = ComposeProject(files, f"skymesh-e2e-{kind}-{uuid.uuid4().hex[:8]}",
                             {**image_env, "SKYMESH_CLUSTER": "e2e", "SKYMESH_WEB_PORT": web})
    failed_before = request.session.testsfailed
    failed = True
    try:
        project.up()
        yield project
        failed = request.session.testsfailed > failed_before
    finally:
        if failed:
            print(f"\n===== logs of compose project {project.name} =====\n{project.logs()}")
        project.down()
