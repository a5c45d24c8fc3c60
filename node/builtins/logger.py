"""``.logger``: one structured line per event, to stdout or a file.

Line format: ``<UTC time> node=<id> <handle> <LEVEL> <text>``; with
``log_format = "json"`` (``SKYMESH_LOG_FORMAT``) one JSON object per line with
the fields ``time``, ``node``, ``service``, ``level``, ``message``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from ..address import format_handle
from ..node import Node
from ..service import Service, expose

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger(Service):
    """The node's log sink. Other services reach it through ``Service.log``."""

    def on_start(self, path: str | None = None, level: str = "info", fmt: str = "text") -> None:
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {sorted(LEVELS)}")
        if fmt not in ("text", "json"):
            raise ValueError("log format must be text or json")
        self.threshold = LEVELS[level]
        self.fmt = fmt
        self.lines = 0
        self.out: IO[str] = open(path, "a", encoding="utf-8") if path else sys.stdout  # noqa: SIM115

    def on_stop(self) -> None:
        self.out.flush()
        if self.out is not sys.stdout:
            self.out.close()

    def on_system(self, event: str, data: Any) -> None:
        """``("log", (when, handle, level, text))`` from the node's log path.

        A SYSTEM event rather than an exposed handler: no message from another
        node can write to the log (the harbor link refuses SYSTEM ``log``).
        """
        if event == "log":
            self.write(*data)

    def write(self, when: float, handle: int, level: str, text: str) -> None:
        """Write one line if ``level`` passes the threshold (control characters escaped,
        so no text can forge a second line)."""
        if LEVELS.get(level, 20) < self.threshold:
            return
        self.lines += 1
        millis = int(when % 1 * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{millis:03d}Z"
        node = Node.of(self).node_id
        if self.fmt == "json":
            record: dict[str, Any] = {
                "time": stamp, "node": node, "service": format_handle(handle),
                "level": level, "message": text,
            }
            self.out.write(json.dumps(record) + "\n")
        else:
            line = f"{stamp} node={node} {format_handle(handle)} {level.upper()} {_escape(text)}"
            self.out.write(line + "\n")
        self.out.flush()

    @expose
    def count(self) -> int:
        """Lines written so far."""
        return self.lines


def _escape(text: str) -> str:
    """Newlines and other control characters as visible escapes: one record, one line,
    so no text (a forged name, a client's bytes) can start a line that looks like
    another record. A traceback reads as one line with ``\\n`` between its lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _CONTROL.get(c, f"\\x{ord(c):02x}") for c in text)


_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\t"}
