"""docker-compose.yml: three nodes join and answer calls across nodes; a killed
node leaves and rejoins; a partitioned node drops out and comes back.

Membership and names are read straight from ZooKeeper (``/skymesh/e2e/``), the
cluster's source of truth, from inside a node container. Calls come from a
short-lived client node started inside a node container (compose_helpers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.compose_helpers import ComposeProject, compose_up, wait_until

# The first test's setup may build every image from scratch (a few minutes).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ZK = "zookeeper:2181"
ROOT = "/skymesh/e2e"
NODES = {"node1": 1, "node2": 2, "node3": 3}
SESSION_TIMEOUT = 10.0  # NodeConfig.session_timeout: how long ZooKeeper keeps a dead node


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, image_env: dict[str, str]) -> Iterator[ComposeProject]:
    with compose_up(request, ["docker-compose.yml"], image_env, "cluster") as project:
        wait_until("nodes 1, 2 and 3 in ZooKeeper", lambda: members(project) == {1, 2, 3}, 90)
        yield project


def tree(project: ComposeProject, via: str = "node1") -> dict:
    return project.zk(via, ZK, f"{ROOT}/nodes", f"{ROOT}/names", f"{ROOT}/groups/demo")


def members(project: ComposeProject, via: str = "node1") -> set[int]:
    nodes = project.zk(via, ZK, f"{ROOT}/nodes")[f"{ROOT}/nodes"] or {}
    return {int(n) for n in nodes}


def test_three_nodes_join_with_their_demo_services(cluster: ComposeProject) -> None:
    t = tree(cluster)
    nodes = t[f"{ROOT}/nodes"]
    assert set(nodes) == {"1", "2", "3"}
    assert len({info["incarnation"] for info in nodes.values()}) == 3
    names = t[f"{ROOT}/names"]
    assert {"demo.1", "demo.2", "demo.3"} <= set(names)
    demo_group = t[f"{ROOT}/groups/demo"]
    assert {int(h) >> 32 for h in demo_group} == {1, 2, 3}
    for service in NODES:
        assert cluster.status(service).startswith("running")


def call(project: ComposeProject, *calls: list, via: str = "node1") -> list[dict]:
    return project.calls(via, "e2e", ZK, calls)


def test_global_names_answer_across_nodes(cluster: ComposeProject) -> None:
    results = call(cluster, ["demo.1", "whoami"], ["demo.2", "whoami"], ["demo.3", "whoami"])
    assert [r["ok"]["host"] for r in results] == ["node1", "node2", "node3"]
    assert [r["ok"]["node"] for r in results] == [1, 2, 3]


def test_lobby_page_is_published_on_loopback(cluster: ComposeProject) -> None:
    """`docker compose up`, then the page at 127.0.0.1:8080 works: it is served and its
    WebSocket logs in and joins a room."""
    import urllib.request

    from websockets.sync.client import connect

    origin = f"http://127.0.0.1:{cluster.env['SKYMESH_WEB_PORT']}"
    page = wait_until("the lobby page on the host's loopback",
                      lambda: urllib.request.urlopen(origin + "/", timeout=5).read(), 60)
    assert b"<title>skymesh lobby</title>" in page
    with connect(origin.replace("http", "ws") + "/ws", origin=origin, open_timeout=10) as ws:
        assert ws.recv(10) == "ok welcome: login <nick>"
        ws.send("login e2e")
        assert ws.recv(10) == "ok hello e2e"
        ws.send("join hall")
        assert ws.recv(10) == "ok joined hall: e2e"


def test_service_calls_a_service_on_another_node(cluster: ComposeProject) -> None:
    (r,) = call(cluster, ["demo.3", "ask", "demo.2"], via="node1")  # node1 -> node3 -> node2
    assert "ok" in r, r
    assert r["ok"]["asked_by"] == "demo.3"
    assert r["ok"]["answer"]["host"] == "node2"


def test_status_shows_nodes_master_names_and_groups(cluster: ComposeProject) -> None:
    code, out = cluster.exec("node2", "skymesh", "status", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert {"1", "2", "3"} <= set(doc["nodes"])
    assert doc["master"] in (1, 2, 3)
    assert doc["epoch"] >= 1
    assert {"demo.1", "demo.2", "demo.3"} <= set(doc["names"])
    assert len(doc["groups"]["demo"]) == 3
    for nid in ("1", "2", "3"):
        assert isinstance(doc["nodes"][nid], dict), doc["nodes"][nid]  # its console answered
        assert "ClusterDemo" in {s["class"] for s in doc["nodes"][nid]["services"]}


def test_lock_contention_from_all_three_nodes_never_overlaps(cluster: ComposeProject) -> None:
    """The lock-safety check on the compose cluster: services on node1..3 take one Redis
    lock in turn; no two critical sections overlap and fences grow in entry order."""
    (started,) = call(cluster, ["demo.1", "contend_everywhere", "e2e-contend", 6, 0.05])
    assert started["ok"] >= 3, started

    def logs() -> list:
        got = call(cluster, *[[f"demo.{i}", "contention_log"] for i in (1, 2, 3)])
        return [r.get("ok", []) for r in got]

    def complete() -> list | None:
        ls = logs()
        return ls if all(len(x) == 6 for x in ls) else None

    per_node = wait_until("every node's six sections", complete, 60)
    sections = sorted((tuple(s) for log in per_node for s in log), key=lambda s: s[1])
    assert len(sections) == 18
    for (f1, _, exit1), (f2, enter2, _) in zip(sections, sections[1:], strict=False):
        assert exit1 <= enter2, "two critical sections overlapped"
        assert f1 < f2, "fences must grow in entry order"


def test_nodes_run_as_non_root(cluster: ComposeProject) -> None:
    code, out = cluster.exec("node1", "id", "-u")
    assert code == 0 and out.strip() != "0"


def test_nodes_report_healthy(cluster: ComposeProject) -> None:
    """The image's HEALTHCHECK (`skymesh health`) turns every node healthy."""
    for service in NODES:
        wait_until(f"{service} healthy",
                   lambda s=service: cluster.status(s) == "running/healthy", 60)
    code, out = cluster.exec("node1", "skymesh", "health")
    assert code == 0, out


# -- secure by default (issue 10 item 7, issue 11 items 3 and 4) ---------------------------

# Anonymous kazoo client, from inside node1: each read or write of the cluster's tree
# must fail with NoAuth. Prints {operation: exception type name or "ALLOWED"}.
_ZK_ANON = """
import json, sys
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1], timeout=5.0)
zk.start(timeout=15)
root = sys.argv[2]
out = {}
for what, op in [
    ("get root", lambda: zk.get(root)),
    ("children root", lambda: zk.get_children(root)),
    ("children nodes", lambda: zk.get_children(root + "/nodes")),
    ("get node 1", lambda: zk.get(root + "/nodes/1")),
    ("create fake node", lambda: zk.create(root + "/nodes/99", b"{}", ephemeral=True)),
    ("set config", lambda: zk.create(root + "/config/@unique:x", b"{}")),
    ("delete names", lambda: zk.delete(root + "/names", recursive=True)),
]:
    try:
        op()
        out[what] = "ALLOWED"
    except Exception as exc:
        out[what] = type(exc).__name__
zk.stop(); zk.close()
print(json.dumps(out))
"""

# From inside node1, a client with no token (and one with a wrong token) against
# node2's console, which is reachable on the compose network (console_bind 0.0.0.0).
_CONSOLE_ANON = """
import json, socket
from node.cli.ops import ConsoleClient
out = {}
with socket.create_connection(("node2", 7000), timeout=10) as s:
    s.sendall(b"call .launcher __ping__\\nlist\\n")
    f = s.makefile("rb")
    lines = []
    try:
        for _ in range(4):
            raw = f.readline()
            if not raw:
                break  # the console closed the session
            lines.append(raw.decode().strip())
    except OSError:
        pass  # timed out: it said nothing more
    out["no token"] = lines
try:
    ConsoleClient("node2", 7000, "a-stolen-looking-but-wrong-token-1234", 10)
    out["wrong token"] = "ALLOWED"
except PermissionError as exc:
    out["wrong token"] = "PermissionError: " + str(exc)
print(json.dumps(out))
"""


def test_anonymous_zookeeper_client_gets_noauth_everywhere(cluster: ComposeProject) -> None:
    code, out = cluster.exec("node1", "python", "-c", _ZK_ANON, ZK, ROOT)
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result and all(v == "NoAuthError" for v in result.values()), result
    assert members(cluster) == {1, 2, 3}  # nothing changed; the identity still reads


def test_redis_refuses_a_client_without_the_password(cluster: ComposeProject) -> None:
    code, out = cluster.exec("redis", "redis-cli", "ping")
    assert "NOAUTH" in out and "PONG" not in out, out
    code, out = cluster.exec("redis", "redis-cli", "set", "skymesh:e2e:x", "1")
    assert "NOAUTH" in out, out
    code, out = cluster.redis_cli("redis", "ping")
    assert out.strip() == "PONG", out
    code, out = cluster.redis_cli("redis", "config", "get", "protected-mode")
    assert out.split() == ["protected-mode", "yes"], out


def test_console_refuses_clients_without_the_token(cluster: ComposeProject) -> None:
    code, out = cluster.exec("node1", "python", "-c", _CONSOLE_ANON)
    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    lines = result["no token"]
    assert lines and lines[0].startswith("<CMD Error>"), result
    assert not any("OK" in line or "alive" in line for line in lines), result
    assert result["wrong token"].startswith("PermissionError"), result


def test_status_and_health_work_with_no_extra_step(cluster: ComposeProject) -> None:
    """The CLI in a node container finds the token in keys_dir by itself."""
    code, out = cluster.exec("node1", "skymesh", "status")
    assert code == 0, out
    code, out = cluster.exec("node3", "skymesh", "health")
    assert code == 0 and "harbor, workers and coordination answer" in out, out


def test_secrets_are_generated_private_and_not_in_the_environment(
    cluster: ComposeProject,
) -> None:
    code, out = cluster.exec("node1", "sh", "-c",
                             "stat -c '%a %U %n' /secrets/zk_auth /secrets/redis_password "
                             "/secrets/keys/console.token /secrets/keys/secret/cluster.key_secret")
    assert code == 0, out
    for line in out.strip().splitlines():
        mode, owner, _ = line.split()
        assert mode == "600" and owner == "skymesh", line
    code, out = cluster.exec("node1", "cat", "/secrets/zk_auth")
    scheme, user, password = out.strip().split(":")
    assert (scheme, user) == ("digest", "skymesh") and len(password) >= 40
    env = " ".join(cluster.container("node1").attrs["Config"]["Env"])
    assert password not in env
    code, redis_pw = cluster.exec("node1", "cat", "/secrets/redis_password")
    assert redis_pw.strip() and redis_pw.strip() not in env
    assert cluster.status("init") == "exited" and \
        cluster.container("init").attrs["State"]["ExitCode"] == 0


LOCKED = ["zookeeper", "redis", "node1", "node2", "node3"]


def test_containers_are_read_only_without_capabilities(cluster: ComposeProject) -> None:
    for service in LOCKED:
        cluster.assert_locked_down(service)


def test_a_frozen_node_turns_unhealthy_then_healthy_again(cluster: ComposeProject) -> None:
    """SIGSTOP node3's process (PID 1): the container runs and ZooKeeper lists it for a
    while, but its console answers nothing, so the HEALTHCHECK turns it unhealthy;
    SIGCONT and it is healthy again (rejoining if its session expired meanwhile)."""
    for service in NODES:
        wait_until(f"{service} healthy",
                   lambda s=service: cluster.status(s) == "running/healthy", 60)
    node3 = cluster.container("node3")
    node3.kill(signal="SIGSTOP")
    try:
        wait_until("node3 unhealthy", lambda: cluster.status("node3") == "running/unhealthy",
                   60)
        log = cluster.container("node3").attrs["State"]["Health"]["Log"]
        assert any("did not answer" in entry["Output"] for entry in log), log
    finally:
        node3.kill(signal="SIGCONT")
    wait_until("node3 healthy again", lambda: cluster.status("node3") == "running/healthy", 90)
    wait_until("node 3 a member again", lambda: members(cluster) == {1, 2, 3}, 60)


def test_killed_node_leaves_and_rejoins(cluster: ComposeProject) -> None:
    before = tree(cluster)[f"{ROOT}/nodes"]["2"]
    cluster.container("node2").kill()  # SIGKILL: no goodbye, ZooKeeper must notice
    wait_until("node 2 to leave membership", lambda: members(cluster) == {1, 3},
               SESSION_TIMEOUT + 20)
    names = tree(cluster)[f"{ROOT}/names"]
    assert "demo.2" not in names and {"demo.1", "demo.3"} <= set(names)
    assert cluster.status("node2").startswith("exited")  # `docker kill` is not restarted by policy
    gone, asked = call(cluster, ["demo.2", "whoami"], ["demo.1", "ask", "demo.2"])
    assert "error" in gone and gone["seconds"] < 10, gone  # fails with a typed error, fast
    assert "error" in asked and asked["seconds"] < 10, asked

    cluster.container("node2").start()
    wait_until("node 2 to rejoin", lambda: members(cluster) == {1, 2, 3}, 60)
    wait_until("demo.2 registered again", lambda: "demo.2" in tree(cluster)[f"{ROOT}/names"], 30)
    after = tree(cluster)[f"{ROOT}/nodes"]["2"]
    assert after["incarnation"] > before["incarnation"]
    (back,) = call(cluster, ["demo.1", "ask", "demo.2"])
    assert back["ok"]["answer"]["host"] == "node2"


def test_partitioned_node_drops_out_and_comes_back(cluster: ComposeProject) -> None:
    """Cut node3 off the network: its ZooKeeper session expires and the others
    see it leave; reconnect it and it joins again by itself."""
    net = cluster.network()
    node3 = cluster.container("node3")
    net.disconnect(node3)
    try:
        wait_until("node 3 to drop out", lambda: members(cluster) == {1, 2},
                   SESSION_TIMEOUT + 20)
        assert "demo.3" not in tree(cluster)[f"{ROOT}/names"]
    finally:
        net.connect(node3, aliases=["node3"])
    wait_until("node 3 back in membership", lambda: members(cluster) == {1, 2, 3}, 60)
    wait_until("demo.3 registered again",
               lambda: "demo.3" in tree(cluster)[f"{ROOT}/names"], 30)
    (r,) = wait_until("demo.3 answering demo.1 again",
                      lambda: [r for r in call(cluster, ["demo.1", "ask", "demo.3"]) if "ok" in r],
                      30)
    assert r["ok"]["answer"]["host"] == "node3"


# Runs inside a node container: GETs each path of the admin endpoint and prints
# {path: [status, body]} ([0, error] when the connection failed).
_SCRAPE = """
import json, sys, urllib.error, urllib.request
out = {}
for path in sys.argv[2:]:
    try:
        with urllib.request.urlopen(sys.argv[1] + path, timeout=10) as r:
            out[path] = [r.status, r.read().decode()]
    except urllib.error.HTTPError as err:
        out[path] = [err.code, err.read().decode()]
    except OSError as err:
        out[path] = [0, repr(err)]
print(json.dumps(out))
"""


def scrape(project: ComposeProject, via: str, base: str, *paths: str) -> dict[str, list]:
    import json

    code, out = project.exec(via, "python", "-c", _SCRAPE, base, *paths)
    assert code == 0, out
    return json.loads(out.strip().splitlines()[-1])


def test_every_node_serves_metrics_and_health(cluster: ComposeProject) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    for service, nid in NODES.items():
        got = wait_until(
            f"{service} ready on its admin endpoint",
            lambda s=service: (r := scrape(cluster, s, "http://127.0.0.1:9100", "/metrics",
                                           "/healthz", "/readyz"))["/readyz"][0] == 200 and r,
            60)
        assert got["/healthz"] == [200, "ok\n"]
        status, text = got["/metrics"]
        assert status == 200
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value
                  for f in fams.values() for s in f.samples}
        assert values[("skymesh_node_info", (("node", str(nid)),))] == 1
        assert values[("skymesh_cluster_members", ())] == 3
        assert values[("skymesh_coord_session_state", (("state", "connected"),))] == 1
        assert values[("skymesh_harbor_peers", ())] == 2
        classes = {s.labels["class"] for s in fams["skymesh_service_messages"].samples}
        assert {"ClusterDemo", "Logger", "Launcher", "Admin"} <= classes
        assert fams["skymesh_remote_call_seconds"].type == "histogram"


def test_admin_endpoint_is_loopback_only(cluster: ComposeProject) -> None:
    got = scrape(cluster, "node2", "http://node1:9100", "/metrics")
    assert got["/metrics"][0] == 0, got  # refused: node1 binds 127.0.0.1 only
