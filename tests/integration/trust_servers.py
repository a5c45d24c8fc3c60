"""Throwaway PKI and extra servers (Redis, Sentinel, ZooKeeper) for the auth and TLS tests.

Every server listens on a free loopback port picked at start, logs into the
test's directory and is stopped by the fixture that made it.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server and a client certificate it signed, and a stranger CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signs nothing the servers trust: a client trusting only it must fail


def make_pki(d: Path) -> Pki:
    """Create a throwaway CA and certificates in ``d`` with openssl."""
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN=skymesh test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 cwd=d)  # fmt: skip
    ext = d / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", str(ext),
                 "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
               d / "client.key", d / "other-ca.pem")  # fmt: skip


def wait_until(cond: Callable[[], bool], timeout: float, what: str, proc: Any, log: Path) -> None:
    """Poll ``cond``; fail with the server's log if it exits or stays silent."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            proc.kill()
            raise AssertionError(f"{what} did not come up:\n{tail}")
        time.sleep(0.1)


class Server:
    """One server process; ``stop()`` terminates it and waits."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def redis_server(d: Path, conf: str, ping: Callable[[], bool]) -> Server:
    """``redis-server`` (or a Sentinel when ``conf`` says so) from config text in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    path = d / "redis.conf"
    path.write_text(f'bind 127.0.0.1\ndir {d}\nsave ""\nappendonly no\n{conf}')
    sentinel = "sentinel monitor" in conf
    srv = Server(["redis-server", str(path), *(["--sentinel"] if sentinel else [])], d / "log")
    wait_until(ping, 30, f"redis in {d}", srv.proc, srv.log)
    return srv


ZK_JARS = ("zookeeper.jar", "netty-codec.jar", "netty-resolver.jar",
           "netty-transport-native-unix-common.jar", "slf4j-simple.jar")  # fmt: skip


def zookeeper_tls(d: Path, pki: Pki) -> tuple[Server, int]:
    """A standalone ZooKeeper serving TLS only (Netty, PEM key and trust stores).

    Client certificates are required (``ssl.clientAuth=need``). Returns the
    server and its secure port.
    """
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    keystore = d / "server-keystore.pem"  # ZooKeeper's PEM store: key then certificate
    keystore.write_text(pki.server_key.read_text() + pki.server_cert.read_text())
    conf = d / "zoo.cfg"
    conf.write_text(
        f"tickTime=500\nminSessionTimeout=1000\ndataDir={d / 'data'}\n"
        f"secureClientPort={port}\nsecureClientPortAddress=127.0.0.1\n"
        "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
        f"ssl.keyStore.location={keystore}\nssl.keyStore.type=PEM\n"
        f"ssl.trustStore.location={pki.ca}\nssl.trustStore.type=PEM\n"
        "ssl.clientAuth=need\nadmin.enableServer=false\n"
    )
    cp = ":".join(str(Path("/usr/share/java") / j) for j in ZK_JARS
                  if (Path("/usr/share/java") / j).exists())  # fmt: skip
    srv = Server(
        ["java", "-Xmx128m", "-XX:+UseSerialGC", "-Dzookeeper.jmx.log4j.disable=true",
         "-cp", cp, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(conf)],
        d / "zookeeper.log",
    )  # fmt: skip

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
        except OSError:
            return False
        return True

    wait_until(listening, 60, "ZooKeeper with TLS", srv.proc, srv.log)
    return srv, port


def zookeeper_sasl(d: Path, users: dict[str, str]) -> tuple[Server, int]:
    """A standalone ZooKeeper that authenticates clients with SASL DIGEST-MD5 (JAAS users)."""
    d.mkdir(parents=True, exist_ok=True)
    port = free_port()
    jaas = d / "jaas.conf"
    entries = "\n".join(f'    user_{u}="{p}"' for u, p in users.items())
    jaas.write_text(
        "Server {\n    org.apache.zookeeper.server.auth.DigestLoginModule required\n"
        f"{entries};\n}};\n"
    )
    conf = d / "zoo.cfg"
    conf.write_text(
        f"tickTime=500\nminSessionTimeout=1000\ndataDir={d / 'data'}\n"
        f"clientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
        "authProvider.1=org.apache.zookeeper.server.auth.SASLAuthenticationProvider\n"
        "4lw.commands.whitelist=ruok\n"
    )
    cp = ":".join(str(Path("/usr/share/java") / j) for j in ZK_JARS
                  if (Path("/usr/share/java") / j).exists())  # fmt: skip
    srv = Server(
        ["java", "-Xmx128m", "-XX:+UseSerialGC", "-Dzookeeper.jmx.log4j.disable=true",
         f"-Djava.security.auth.login.config={jaas}",
         "-cp", cp, "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(conf)],
        d / "zookeeper.log",
    )  # fmt: skip

    def ruok() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False

    wait_until(ruok, 60, "ZooKeeper with SASL", srv.proc, srv.log)
    return srv, port
