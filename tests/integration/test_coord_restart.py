"""Restarting with the same node id after a SIGKILL (issue 12), with a real ZooKeeper."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# A member in its own process: it listens on the endpoint it advertises (as a node's
# harbor does), joins with node id 7, says "up" and sleeps until killed.
CHILD = textwrap.dedent(
    """
    import os, socket, sys, time
    import coord
    live = socket.create_server(("127.0.0.1", 0))
    ep = f"tcp://127.0.0.1:{live.getsockname()[1]}"
    c = coord.connect(sys.argv[1], None, sys.argv[2], session_timeout=4.0)
    info = c.start(7, "localhost", os.getpid(), {"pull": ep})
    print("up", info.incarnation, flush=True)
    time.sleep(600)
    """
)


def _start_member(servers: dict[str, str], cluster: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, servers["zk"], cluster],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["up"], line
    return proc, int(line[1])


def test_live_member_in_another_process_is_refused_at_once(make_coord, servers, cluster):
    proc, _ = _start_member(servers, cluster)
    try:
        t0 = time.monotonic()
        with pytest.raises(Exception, match="live node") as exc:
            make_coord(node_id=7)
        assert type(exc.value).__name__ == "NodeIdTaken"
        assert time.monotonic() - t0 < 3
    finally:
        proc.kill()
        proc.wait(10)


def test_sigkilled_member_restarted_at_once_joins_after_its_session_expires(
    make_coord, servers, cluster, caplog
):
    proc, old_inc = _start_member(servers, cluster)
    proc.send_signal(signal.SIGKILL)  # its session is not closed: ZooKeeper expires it later
    proc.wait(10)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, logger="coord"):
        c = make_coord(node_id=7, session_timeout=4.0)
    took = time.monotonic() - t0
    assert c.node.node_id == 7 and c.node.incarnation != old_inc
    # It had to wait for the old session (4 s) to expire, and no longer than the bound.
    assert 1.0 < took < 1.5 * 4 + 2 + 2, took
    progress = [r for r in caplog.records if "waiting up to" in r.getMessage()]
    assert len(progress) == 1 and progress[0].levelno == logging.WARNING
    assert any("claimed" in r.getMessage() for r in caplog.records)
    assert c.members()[7] == c.node


def _joined_through_a_cut(servers, cluster, marker: bytes, node_id: int | None):
    """Start a coordinator whose connection is cut right after the request holding
    ``marker`` reached ZooKeeper; return it, the proxy and a plain client."""
    from coord_helpers import TcpProxy
    from kazoo.client import KazooClient

    import coord

    proxy = TcpProxy(servers["zk"])
    proxy.cut_after(marker)
    c = coord.connect(proxy.address, None, cluster, session_timeout=10.0)
    try:
        info = c.start(node_id, "localhost", os.getpid(), {})
    except BaseException:
        c.stop()
        proxy.close()
        raise
    zk = KazooClient(hosts=servers["zk"], timeout=10)
    zk.start(15)
    return c, info, proxy, zk


@pytest.mark.parametrize("marker", [b"/nodes/7", b"/election/n-"])
def test_start_rides_out_a_connection_cut_under_a_create(servers, cluster, marker):
    # The create of nodes/7 (or of the election candidate) reaches ZooKeeper, then the
    # connection drops before the reply: start() must neither fail nor leave a second
    # znode of its own; it adopts the one it made.
    from coord_helpers import wait_for

    c, info, proxy, zk = _joined_through_a_cut(servers, cluster, marker, 7)
    try:
        assert proxy.cuts == 1
        data, _ = zk.get(f"/skymesh/{cluster}/nodes/7")
        assert data == info.to_json()  # this attempt's incarnation, not the cut one's
        election = f"/skymesh/{cluster}/election"
        candidates = [zk.get(f"{election}/{ch}")[0] for ch in zk.get_children(election)]
        assert candidates == [b"7"]
        wait_for(lambda: c.is_master(), what="the only candidate leads")
    finally:
        c.stop()
        proxy.close()
        zk.stop()
        zk.close()


def test_start_with_auto_id_leaves_no_phantom_member_after_a_cut(servers, cluster):
    c, info, proxy, zk = _joined_through_a_cut(servers, cluster, b"/nodes/1", None)
    try:
        assert proxy.cuts == 1
        assert zk.get_children(f"/skymesh/{cluster}/nodes") == [str(info.node_id)]
        assert set(c.members()) == {info.node_id}
    finally:
        c.stop()
        proxy.close()
        zk.stop()
        zk.close()
