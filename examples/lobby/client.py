"""A small lobby client (2-byte length framing).

    python -m examples.lobby.client --port 7000 --nick ann --room hall hello "how are you"

logs in, joins the room, says each message, prints what arrives for
``--linger`` seconds, then quits. :class:`LobbyClient` is the same for scripts and tests.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time

from node.builtins import pack


class LobbyClient:
    """A blocking client: ``command`` sends one frame and returns the ``ok``/``error`` answer;
    chat lines that arrive meanwhile are kept in ``chat``."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.chat: list[str] = []
        assert self.recv().startswith("ok welcome")

    def recv(self) -> str:
        """The next frame from the server, as text. Raises ``ConnectionError`` at EOF."""
        while True:
            if len(self.buf) >= 2:
                n = int.from_bytes(self.buf[:2], "big")
                if len(self.buf) >= n + 2:
                    frame, self.buf = self.buf[2 : n + 2], self.buf[n + 2 :]
                    return frame.decode()
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("lobby closed the connection")
            self.buf += chunk

    def command(self, line: str) -> str:
        """Send a command; return its answer (chat lines in between go to ``chat``)."""
        self.sock.sendall(pack(line.encode()))
        while True:
            text = self.recv()
            if text.startswith(("ok", "error")):
                return text
            self.chat.append(text)

    def wait_chat(self, line: str, timeout: float = 5.0) -> list[str]:
        """Read until the chat line ``line`` arrived; returns ``chat``.

        Raises ``AssertionError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while line not in self.chat:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                self.chat.append(self.recv())
            except TimeoutError:
                raise AssertionError(f"no {line!r} in {self.chat}") from None
        return self.chat

    def close(self) -> None:
        """Close the connection."""
        self.sock.close()


def main() -> int:
    """Run the command line client."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--nick", required=True)
    p.add_argument("--room", default="hall")
    p.add_argument("--linger", type=float, default=1.0)
    p.add_argument("messages", nargs="*")
    args = p.parse_args()
    c = LobbyClient(args.host, args.port)
    for line in (f"login {args.nick}", f"join {args.room}", *(f"say {m}" for m in args.messages)):
        answer = c.command(line)
        print(f"> {line}\n{answer}")
        if answer.startswith("error"):
            return 1
    c.sock.settimeout(args.linger)
    try:
        while True:
            c.chat.append(c.recv())
    except (TimeoutError, ConnectionError):
        pass
    print("\n".join(c.chat))
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
