"""Echo through ``.gate`` agents vs a plain ``selectors`` echo server. One JSON line per figure.

Run: ``python -m bench.gate [--clients 100] [--seconds 3] [--workers 2] [--size 32]``.

The clients run in a separate process (its own GIL): each of N connections
sends a 2-byte-length frame, waits for the echo, sends the next, so N
round trips are in flight. The same load is run against a bare
single-threaded ``selectors`` echo server (the baseline: what Python does
with no actors at all), then against a node whose ``.gate`` hands every frame
to the client's agent and the agent answers with ``send_client``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import selectors
import socket
import threading
import time
from typing import Any

from node import Node
from node.builtins import Agent, Gate


def emit(name: str, value: float, unit: str, **extra: Any) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit, **extra}), flush=True)


class EchoAgent(Agent):
    """Sends every frame back."""

    def on_client(self, data: bytes) -> None:
        self.send_client(data)


class PlainEcho:
    """The baseline: one thread, one selector, bytes echoed as they come."""

    def __init__(self) -> None:
        self.lsock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.lsock.setblocking(False)
        self.port = self.lsock.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self.loop, name="bench-plain-echo")
        self.thread.start()

    def loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.lsock, selectors.EVENT_READ)
        while self.running:
            for key, _ in sel.select(0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.lsock:
                    conn, _ = sock.accept()
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(conn, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    sock.sendall(data)  # small echoes: the kernel takes them at once
                else:
                    sel.unregister(sock)
                    sock.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        sel.close()

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def client_process(port: int, clients: int, seconds: float, size: int, out: Any) -> None:
    """N ping-pong connections for ``seconds``; puts (round trips, latencies) on ``out``."""
    sel = selectors.DefaultSelector()
    payload = b"x" * size
    frame = len(payload).to_bytes(2, "big") + payload
    bufs: dict[socket.socket, bytes] = {}
    sent_at: dict[socket.socket, float] = {}
    for _ in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
    latencies: list[float] = []
    for s in bufs:
        sent_at[s] = time.perf_counter()
        s.send(frame)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for key, _ in sel.select(0.1):
            s = key.fileobj  # type: ignore[assignment]
            buf = bufs[s] + s.recv(65536)
            while len(buf) >= len(frame):  # one frame in flight: whole echoes only
                buf = buf[len(frame):]
                now = time.perf_counter()
                latencies.append(now - sent_at[s])
                sent_at[s] = now
                s.send(frame)
            bufs[s] = buf
    for s in bufs:
        s.close()
    out.put((len(latencies), latencies))


def measure(port: int, clients: int, seconds: float, size: int) -> tuple[float, float, float]:
    """(round trips/s, p50 ms, p99 ms) of the client process against ``port``."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=client_process, args=(port, clients, seconds, size, q))
    p.start()
    n, lat = q.get(timeout=seconds + 60)
    p.join()
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else 0.0
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else 0.0
    return n / seconds, p50, p99


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description="gate echo benchmark")
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    meta = {"clients": a.clients, "size": a.size}

    plain = PlainEcho()
    try:
        base, b50, b99 = measure(plain.port, a.clients, a.seconds, a.size)
    finally:
        plain.stop()
    emit("plain_selectors_echo", base, "msg/s", **meta)
    emit("plain_selectors_echo_p50", b50, "ms", **meta)
    emit("plain_selectors_echo_p99", b99, "ms", **meta)

    with Node.standalone(workers=a.workers) as node:
        gate = node.newservice(Gate, EchoAgent, "127.0.0.1", 0,
                               {"max_clients": a.clients + 10, "mailbox_limit": 1024})
        port = node.call(gate, "address")[1]
        rate, p50, p99 = measure(port, a.clients, a.seconds, a.size)
    meta["workers"] = a.workers
    emit("gate_agent_echo", rate, "msg/s", **meta)
    emit("gate_agent_echo_p50", p50, "ms", **meta)
    emit("gate_agent_echo_p99", p99, "ms", **meta)
    emit("gate_vs_plain", rate / base if base else 0.0, "ratio", **meta)


if __name__ == "__main__":
    main()
