"""Every command README.md shows runs as written from the checkout.

The fenced ``sh`` and ``python`` blocks are extracted from README.md itself, so an
edit there is what is tested. Short commands run to completion; long-running ones
(a node, the lobby) are started, checked through their output and their port, and
stopped; commands that need a Docker engine are checked for the files, compose
services and ``skymesh`` arguments they name (tests/e2e runs compose itself). A
command that matches none of the kinds below fails ``test_every_command_is_covered``.
The benchmark commands quoted inline (`` `python -m bench.local` ``) get ``--help``.

Expected output is read from the README's own comments: ``print(...)  # 15`` and a
quoted ``"ok: 2 node(s) in demo"``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.cli import _parser
from node.core import native

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ACTIVATE = ". .venv/bin/activate"


def _blocks(lang: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```$", text, flags=re.M | re.S)


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd  # comment`` -> (cmd, comment); a ``#`` inside quotes is not a comment."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip(), line[i + 1 :].strip()
    return line.strip(), ""


def _sh_commands() -> list[tuple[str, str]]:
    """Every (command, comment) of every ``sh`` block, comment-only lines left out."""
    out = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            cmd, comment = _split_comment(line)
            if cmd:
                out.append((cmd, comment))
    return out


# The kinds of command the README may show; each is exercised by a test below.
KINDS: dict[str, str] = {
    "bootstrap": r"scripts/bootstrap\.sh",
    "activate": re.escape(ACTIVATE),
    "test": r"\./scripts/test\.sh( .*)?",
    "compose": r"docker[ -]compose .*",
    "up": r"deploy/up\.sh( .*)?",
    "node": r"skymesh node --standalone .*",
    "nc": r"nc 127\.0\.0\.1 \d+",
    "cluster": r"(\./scripts/servers\.sh .*|SKYMESH_\w+=.* skymesh .*|kill %1 %2)",
    "reload": r"skymesh reload .*",
    "build": r"\.venv/bin/python -m node\.core\.build( .*)?",
}


def _kind(cmd: str) -> str | None:
    return next((k for k, rx in KINDS.items() if re.fullmatch(rx, cmd)), None)


def _inline(kind: str) -> list[tuple[str, str]]:
    """Inline code spans of prose that are commands of ``kind`` (compose, up)."""
    text = re.sub(r"^```.*?^```$", "", README.read_text(encoding="utf-8"), flags=re.M | re.S)
    return [(c, "") for c in re.findall(r"`([^`\n]+)`", text) if _kind(c) == kind]


def _of(kind: str) -> list[tuple[str, str]]:
    found = [(c, note) for c, note in _sh_commands() if _kind(c) == kind]
    assert found, f"README shows no {kind} command any more: update tests/unit/test_readme.py"
    return found


def _node_cmd(service: str) -> str:
    found = [c for c, _ in _of("node") if f"--service {service}" in c]
    assert len(found) == 1, f"README shows no single `skymesh node ... --service {service}`"
    return found[0]


def _env() -> dict[str, str]:
    """The environment of a user in a fresh shell: no PYTHONPATH, no node settings."""
    from node.config import ENV_NOT_CONFIG

    return {k: v for k, v in os.environ.items()
            if k != "PYTHONPATH" and (not k.startswith("SKYMESH_") or k in ENV_NOT_CONFIG)}


def _in_venv(cmd: str) -> list[str]:
    """Run ``cmd`` in bash after the README's activation line (run from anywhere)."""
    return ["bash", "-c", f". {ROOT}/.venv/bin/activate && {cmd}"]


def test_every_command_is_covered() -> None:
    cmds = _sh_commands()
    assert len(cmds) >= 10, cmds
    unknown = [c for c, _ in cmds if _kind(c) is None]
    assert not unknown, f"README commands no test runs (add a kind): {unknown}"
    assert len(_blocks("python")) == 1


def test_bootstrap_then_activate_gives_the_venv_skymesh() -> None:
    # The test command ran it already: it must be quiet and leave things current.
    ((cmd, _),) = _of("bootstrap")
    p = subprocess.run(["bash", "-c", cmd], cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    check = subprocess.run([str(ROOT / cmd), "--check"], cwd=ROOT, env=_env(),
                           capture_output=True, text=True, timeout=120)
    assert (check.returncode, check.stderr) == (0, "")
    ((activate, _),) = _of("activate")
    p = subprocess.run(["bash", "-c", f"{activate} && command -v skymesh python"], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(ROOT / ".venv/bin/skymesh"), str(ROOT / ".venv/bin/python")]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler: the core stays pure")
def test_the_build_command_compiles_the_core_in_place() -> None:
    # Run as written (it is what scripts/bootstrap.sh runs): afterwards every module is
    # built and newer than its sources, and --status names the build this process gets.
    (cmd, _), = _of("build")
    p = subprocess.run(shlex.split(cmd), cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert native.current()
    env = {**_env(), "SKYMESH_PURE": "0"}
    status = subprocess.run([*shlex.split(cmd), "--status"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.strip() == "compiled", status.stderr


def test_the_test_command_is_an_executable_script() -> None:
    # It is the command running this suite: checked, not re-run.
    for cmd, _ in _of("test"):
        script = ROOT / shlex.split(cmd)[0]
        assert os.access(script, os.X_OK), script
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)


def _compose_file(args: list[str]) -> Path:
    files = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-f", "--file")]
    return ROOT / (files[0] if files else "docker-compose.yml")


def _compose_tool() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=60, check=False
    ).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_compose_commands_name_real_files_services_and_arguments() -> None:
    tool = _compose_tool()
    for cmd, _ in _of("compose") + _inline("compose"):
        args = shlex.split(cmd)[2 if cmd.startswith("docker compose") else 1 :]
        compose = _compose_file(args)
        assert compose.is_file(), f"{cmd}: no {compose}"
        text = compose.read_text(encoding="utf-8")
        if tool is not None:  # syntax and interpolation, no engine needed
            p = subprocess.run([*tool, "-f", str(compose), "config", "-q"], cwd=ROOT,
                               capture_output=True, text=True, timeout=120, env=_env())
            assert p.returncode == 0, f"{cmd}: {compose.name}: {p.stderr}"
        rest = [a for a in args if a not in ("-f", "--file") and not a.endswith(".yml")]
        if rest[0] == "up" and "--build" in rest:
            assert re.search(r"^\s+build:", text, re.M), f"{cmd}: nothing to build"
            assert (ROOT / "deploy" / "Dockerfile").is_file()
        if rest[0] == "exec":
            service, *inner = rest[1:]
            assert re.search(rf"^  {re.escape(service)}:", text, re.M), f"{cmd}: no {service}"
            assert inner[0] == "skymesh", cmd
            _parser().parse_args(inner[1:])  # exits (fails the test) on a bad subcommand


def test_no_registry_command_is_one_script_that_runs_compose_up() -> None:
    for cmd, _ in _of("up") + _inline("up"):
        args = shlex.split(cmd)
        script = ROOT / args[0]
        assert os.access(script, os.X_OK), script
        subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
        assert _compose_file(args[1:]).is_file(), cmd
        assert os.access(ROOT / "deploy" / "build-images.sh", os.X_OK)


def test_up_script_exports_the_stand_ins_and_runs_compose_up(tmp_path: Path) -> None:
    """deploy/up.sh in a copy whose build-images.sh and compose are stubs that report."""
    (tmp_path / "deploy").mkdir()
    shutil.copy2(ROOT / "deploy" / "up.sh", tmp_path / "deploy" / "up.sh")
    stub = tmp_path / "deploy" / "build-images.sh"
    stub.write_text("#!/bin/sh\necho build-images ran >&2\n"
                    "printf 'SKYMESH_PYTHON_IMAGE=p:1\\nSKYMESH_REDIS_IMAGE=r:1\\n'\n")
    compose = tmp_path / "compose"
    compose.write_text('#!/bin/sh\necho "args: $*"\n'
                       'echo "images: $SKYMESH_PYTHON_IMAGE $SKYMESH_REDIS_IMAGE"\n')
    for f in (stub, compose):
        f.chmod(0o755)
    env = _env() | {"SKYMESH_COMPOSE": str(compose)}
    p = subprocess.run([str(tmp_path / "deploy" / "up.sh"), "-f", "docker-compose.ha.yml", "-d"],
                       cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "build-images ran" in p.stderr
    assert p.stdout.splitlines() == ["args: -f docker-compose.ha.yml up --build -d",
                                     "images: p:1 r:1"]
    stub.write_text("#!/bin/sh\nexit 3\n")  # a failed build never reaches compose
    p = subprocess.run([str(tmp_path / "deploy" / "up.sh")], cwd="/", env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 3 and "args:" not in p.stdout


@contextlib.contextmanager
def _running(
    cmd: str, ready: str, timeout: float = 60, cwd: Path = ROOT
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``cmd`` in the venv; yield once a line containing ``ready`` was logged.

    Stops it with SIGINT (Ctrl-C) afterwards and asserts a clean exit.
    """
    p = subprocess.Popen(_in_venv(f"exec {cmd}"), cwd=cwd, env=_env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        assert p.stdout is not None
        os.set_blocking(p.stdout.fileno(), False)
        while not any(ready in line for line in lines):
            chunk = p.stdout.readline()
            if chunk:
                lines.append(chunk)
                continue
            assert p.poll() is None, f"{cmd} exited {p.returncode}:\n{''.join(lines)}"
            assert time.monotonic() < deadline, f"{cmd}: no {ready!r}:\n{''.join(lines)}"
            time.sleep(0.05)
        yield p, lines
        os.set_blocking(p.stdout.fileno(), True)
        p.send_signal(signal.SIGINT)
        rest, _ = p.communicate(timeout=30)
        lines.append(rest)
        assert p.returncode == 0, f"{cmd} exited {p.returncode} on Ctrl-C:\n{''.join(lines)}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _wait_lines(p: subprocess.Popen[str], lines: list[str], text: str, timeout: float) -> None:
    assert p.stdout is not None
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lines[-5:]):
        chunk = p.stdout.readline()
        if chunk:
            lines.append(chunk)
            continue
        assert p.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.05)


def test_single_node_runs_from_the_checkout_until_ctrl_c() -> None:
    cmd = _node_cmd("examples.hello:Hello")
    period = float(shlex.split(cmd)[-1])
    with _running(cmd, "Hello service up") as (p, lines):
        _wait_lines(p, lines, "tick: 0 greetings", timeout=period * 3)  # its period argument
    assert "Hello service stopping after 0 greetings" in "".join(lines)


def test_app_dir_imports_services_from_another_directory(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "readme_probe.py").write_text(
        "from node import Service\n\n"
        "class Probe(Service):\n"
        "    def on_start(self) -> None:\n"
        "        self.log('probe up')\n", encoding="utf-8")
    cmd = "skymesh node --standalone"
    with _running(f"{cmd} --app-dir app --service readme_probe:Probe", "probe up", cwd=tmp_path):
        pass
    # Without it the current directory (here tmp_path) is searched, and has no such module.
    p = subprocess.run(_in_venv(f"{cmd} --service readme_probe:Probe"), cwd=tmp_path,
                       env=_env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert "No module named 'readme_probe'" in p.stderr


@contextlib.contextmanager
def _ports_free(*ports: int) -> Iterator[None]:
    """The README's fixed ports: one user at a time on this machine, and free."""
    with open(Path(os.environ.get("TMPDIR", "/tmp")) / "skymesh-readme-ports.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        deadline = time.monotonic() + 60
        for port in ports:
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) != 0:
                        break
                assert time.monotonic() < deadline, f"port {port} stays taken"
                time.sleep(0.5)
        yield


def test_lobby_starts_and_nc_can_chat() -> None:
    cmd = _node_cmd("examples.lobby.server:Lobby")
    ((nc, note),) = _of("nc")
    port = int(nc.split()[-1])
    typed = [t.strip() for t in note.split("type:", 1)[1].split(",")]
    assert typed[0].startswith("login ")
    ports = [int(a) for a in shlex.split(cmd)[-2:]]
    assert port in ports
    with _ports_free(*ports), _running(cmd, "node 1 up"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"ok welcome")
            s.sendall("".join(f"{t}\n" for t in typed).encode())
            got = [f.readline().decode().strip() for _ in range(6)]  # 4 replies, 2 chat lines
    nick = typed[0].split()[1]
    assert got[0] == f"ok hello {nick}"
    assert got[1].startswith("ok joined hall")
    assert f"hall {nick}: hi" in got and f"* {nick} shouts: hey" in got


def test_python_example_prints_what_its_comments_say(tmp_path: Path) -> None:
    (code,) = _blocks("python")
    want = re.findall(r"^\s*print\(.*\)\s+#\s*(\S+)\s*$", code, re.M)
    assert len(want) >= 2, want
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    # From another directory: `node` comes from the installed package, not the cwd.
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(),
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == want


def test_cluster_by_hand() -> None:
    """The block as written, in one shell: servers, two nodes, health, kill."""
    cmds = _of("cluster")
    status = subprocess.run([str(ROOT / "scripts/servers.sh"), "status"], env=_env(),
                            capture_output=True, timeout=60, check=False)
    servers_were_up = status.returncode == 0
    script = ["set -e", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    expect = ""
    for cmd, note in cmds:
        if cmd.endswith("servers.sh stop") and servers_were_up:
            continue  # the test command's servers: not ours to stop
        if "skymesh health" in cmd:
            expect = re.findall(r'"([^"]+)"', note)[0]
            # Poll the line as written until it reports what the comment says.
            script.append(f"for i in $(seq 60); do out=$({cmd} 2>&1) || true; "
                          f"case $out in *{shlex.quote(expect)}*) break;; esac; sleep 0.5; done; "
                          'echo "health: $out"')
        elif cmd == "kill %1 %2":
            script.append(f"pids=$(jobs -p); {cmd}; set +e; codes=; "
                          'for p in $pids; do wait "$p"; codes="$codes $?"; done; '
                          'set -e; echo "exits$codes"')
        else:
            script.append(cmd)
    assert expect, "the README's health line lost its expected output"
    p = subprocess.run(_in_venv("\n".join(script)), cwd=ROOT, env=_env(), capture_output=True,
                       text=True, timeout=300)
    out = p.stdout + p.stderr
    if not servers_were_up and p.returncode != 0:
        subprocess.run([str(ROOT / "scripts/servers.sh"), "stop"], env=_env(), timeout=120,
                       check=False)
    assert p.returncode == 0, out
    assert f"health: {expect}" in p.stdout, out
    assert "exits 0 0" in p.stdout, out


def test_benchmark_commands_in_the_text_parse_their_options() -> None:
    """The inline `python ...` benchmark commands: `--help` only (benchmarks are not run)."""
    text = README.read_text(encoding="utf-8")
    cmds = re.findall(r"`(python [^`]+)`", text)
    assert len(cmds) >= 4, cmds
    for cmd in cmds:
        optional = re.findall(r"\[([^\]]+)\]", cmd)
        args = shlex.split(re.sub(r"\s*\[[^\]]+\]", "", cmd))
        for extra in [[], *(shlex.split(o) for o in optional)]:
            p = subprocess.run(_in_venv(shlex.join([*args, *extra, "--help"])), cwd=ROOT,
                               env=_env(), capture_output=True, text=True, timeout=60)
            assert p.returncode == 0, f"{cmd}: {p.stderr}"
            for option in extra:
                if option.startswith("--"):
                    assert option in p.stdout, f"{cmd}: no {option} in --help"


def test_reload_commands_parse_and_say_why_they_cannot_reach() -> None:
    """With nothing to reach (no console on the port, no ZooKeeper) each README reload
    command runs and fails with a clear line, exit 1, never a usage error (2)."""
    env = _env() | {"SKYMESH_ZK_HOSTS": "127.0.0.1:1", "SKYMESH_CLUSTER": "readme"}
    for shown, _ in _of("reload"):
        cmd = shown.replace("--port 7001", "--port 1")
        p = subprocess.run(_in_venv(cmd + " --timeout 2"), env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 1, (cmd, p.returncode, p.stderr)
        assert p.stderr.strip() and "Traceback" not in p.stderr, (cmd, p.stderr)
