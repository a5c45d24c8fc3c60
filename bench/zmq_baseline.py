"""Raw ZeroMQ limits next to harbor's own figure, one JSON line per figure.

Every figure has a sender in this process and a receiver in a child process,
over TCP on 127.0.0.1. Throughput is messages counted at the receiver divided
by the time from the sender's first send to the receiver's last message
(``time.monotonic`` is one clock for every process of the machine):

- ``pyzmq_push_pull_1_per_frame``: one msgpack message per ZeroMQ frame;
- ``pyzmq_push_pull_100_per_frame``: 100 messages packed per frame;
- ``pyzmq_dealer_router_rtt``: DEALER -> ROUTER echo round trip, mean and p99;
- ``harbor_zmq_transport_one_way``: ZmqTransport to ZmqTransport.

Each figure is measured twice: plain, and with CURVE (``..._curve``): raw
pyzmq with a CURVE key pair per side and no ZAP handler (the cost of the
encryption alone), harbor with credentials from :func:`harbor.keys.generate`
(encryption plus its ZAP handler and per-frame User-Id check).

Run from the repository root: ``python bench/zmq_baseline.py [--quick] [--curve off|on|both]``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import msgpack
import zmq

ROOT = str(Path(__file__).resolve().parents[1])
MSG = (2 << 32 | 1, 1 << 32 | 1, 0, 0, ("ping", [1, "x"]))
# Raw CURVE: (server public, server secret, client public, client secret), z85 bytes;
# None for plain sockets. Made once per run and passed to the children.
Curve = tuple[bytes, bytes, bytes, bytes] | None


def curve_keys() -> Curve:
    """Fresh key pairs for a raw CURVE server and client."""
    sp, ss = zmq.curve_keypair()
    cp, cs = zmq.curve_keypair()
    return sp, ss, cp, cs


def _server(sock: zmq.Socket[bytes], curve: Curve) -> None:
    if curve is not None:
        sock.curve_server = True
        sock.curve_secretkey = curve[1]


def _client(sock: zmq.Socket[bytes], curve: Curve) -> None:
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve[0], *curve[2:]


def quiet(_line: str) -> None:
    """Drop harbor's log lines (the peer-down notice at shutdown)."""


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 2), "unit": unit}), flush=True)


def _pull_child(conn: Connection, n: int, per_frame: int, curve: Curve) -> None:
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    _server(pull, curve)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    conn.send(port)
    got = 0
    while got < n:
        batch = msgpack.unpackb(pull.recv(), raw=False)
        got += len(batch) if per_frame > 1 else 1
    last = time.monotonic()
    started: float = conn.recv()
    conn.send(got / (last - started))
    pull.close(0)
    ctx.term()


def push_pull(n: int, per_frame: int, curve: Curve = None) -> float:
    """msgs/s through a PUSH/PULL pair, ``per_frame`` messages per frame (CURVE if given)."""
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_pull_child, args=(child, n, per_frame, curve))
    proc.start()
    port = parent.recv()
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    _client(push, curve)
    push.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.2)  # let the connection come up: connecting is not what is measured
    started = time.monotonic()
    if per_frame == 1:
        for _ in range(n):
            push.send(msgpack.packb(MSG, use_bin_type=True))
    else:
        for _ in range(n // per_frame):
            push.send(msgpack.packb([MSG] * per_frame, use_bin_type=True))
    parent.send(started)
    rate: float = parent.recv()
    proc.join()
    push.close(0)
    ctx.term()
    return rate


def _echo_child(conn: Connection, curve: Curve) -> None:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    _server(router, curve)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    conn.send(port)
    while True:
        ident, data = router.recv_multipart()
        if data == b"stop":
            break
        router.send_multipart([ident, data])
    router.close(0)
    ctx.term()


def dealer_router(n: int, curve: Curve = None) -> tuple[float, float]:
    """Mean and p99 round trip (µs) of one small message DEALER -> ROUTER -> DEALER."""
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_echo_child, args=(child, curve))
    proc.start()
    port = parent.recv()
    ctx = zmq.Context()
    dealer = ctx.socket(zmq.DEALER)
    _client(dealer, curve)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    data = msgpack.packb(MSG, use_bin_type=True)
    samples = []
    for i in range(n + 100):
        t0 = time.perf_counter()
        dealer.send(data)
        dealer.recv()
        if i >= 100:  # warm-up
            samples.append((time.perf_counter() - t0) * 1e6)
    dealer.send(b"stop")
    proc.join()
    dealer.close(0)
    ctx.term()
    samples.sort()
    return statistics.fmean(samples), samples[int(len(samples) * 0.99)]


def _harbor_child(conn: Connection, n: int, keys: str | None) -> None:
    sys.path.insert(0, ROOT)
    from harbor import PeerInfo, ZmqTransport
    from harbor.keys import load

    state: dict[str, Any] = {"got": 0, "last": 0.0}

    def deliver(_src: int, _inc: int, msgs: list[Any]) -> None:
        state["got"] += len(msgs)
        state["last"] = time.monotonic()

    creds = load(keys, 2) if keys else None
    t = ZmqTransport(2, 2, deliver, lambda *_: None, lambda *_: None, log=quiet, credentials=creds)
    t.start()
    conn.send(t.endpoints)
    other = conn.recv()
    t.set_peers({1: PeerInfo(1, other["pull"], other["pub"], other.get("key", ""))})
    conn.send("ready")
    started: float = conn.recv()
    while state["got"] < n:
        time.sleep(0.001)
    conn.send(state["got"] / (state["last"] - started))
    t.stop()


def harbor_one_way(n: int, keys: str | None = None) -> float:
    """msgs/s from one ZmqTransport to another in another process, counted at the receiver.

    ``keys``: a directory from :func:`harbor.keys.generate` (nodes 1 and 2): CURVE on.
    """
    sys.path.insert(0, ROOT)
    from harbor import PeerInfo, ZmqTransport
    from harbor.keys import load

    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=_harbor_child, args=(child, n, keys))
    proc.start()
    other = parent.recv()
    creds = load(keys, 1) if keys else None
    t = ZmqTransport(
        1, 1, lambda *_: None, lambda *_: None, lambda *_: None, log=quiet, credentials=creds
    )
    t.start()
    t.set_peers({2: PeerInfo(2, other["pull"], other["pub"], other.get("key", ""))})
    parent.send(t.endpoints)
    parent.recv()
    time.sleep(0.2)  # let the connections come up: connecting is not what is measured
    send = t.send
    started = time.monotonic()
    for i in range(n):
        send(2, (2 << 32 | 1, 1 << 32 | 1, i, 0, ("ping", [1, "x"])))
    parent.send(started)
    rate: float = parent.recv()
    proc.join()
    t.stop()
    return rate


def main() -> None:
    quick = "--quick" in sys.argv
    mode = sys.argv[sys.argv.index("--curve") + 1] if "--curve" in sys.argv else "both"
    k = 10 if quick else 1
    for on in {"off": [False], "on": [True], "both": [False, True]}[mode]:
        sfx = "_curve" if on else ""
        curve = curve_keys() if on else None
        emit(f"pyzmq_push_pull_1_per_frame{sfx}", push_pull(300_000 // k, 1, curve), "msgs/s")
        v = push_pull(3_000_000 // k, 100, curve)
        emit(f"pyzmq_push_pull_100_per_frame{sfx}", v, "msgs/s")
        mean, p99 = dealer_router(20_000 // k, curve)
        emit(f"pyzmq_dealer_router_rtt_mean{sfx}", mean, "us")
        emit(f"pyzmq_dealer_router_rtt_p99{sfx}", p99, "us")
        with tempfile.TemporaryDirectory() as tmp:
            keys = None
            if on:
                from harbor.keys import generate

                keys = str(generate(f"{tmp}/keys", node_ids=[1, 2]))
            v = harbor_one_way(1_000_000 // k, keys)
        emit(f"harbor_zmq_transport_one_way{sfx}", v, "msgs/s")


if __name__ == "__main__":
    main()
