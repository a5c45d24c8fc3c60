"""``.logger``: one structured line per event, to stdout or a file.

Line format: ``<UTC time> node=<id> <handle> <LEVEL> <text>``; with
``log_format="json"`` the same fields as one JSON object per line.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from .address import format_handle
from .service import Service, expose

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}


class Logger(Service):
    """The node's log sink. Other services reach it through ``Service.log``."""

    def on_start(self, path: str | None = None, level: str = "info", fmt: str = "text") -> None:
        if level not in LEVELS:
            raise ValueError(f"log level must be one of {sorted(LEVELS)}")
        self.threshold = LEVELS[level]
        self.fmt = fmt
        self.lines = 0
        self.out: IO[str] = open(path, "a", encoding="utf-8") if path else sys.stdout  # noqa: SIM115

    def on_stop(self) -> None:
        self.out.flush()
        if self.out is not sys.stdout:
            self.out.close()

    @expose
    def write(self, when: float, handle: int, level: str, text: str) -> None:
        """Write one line if ``level`` passes the threshold."""
        if LEVELS.get(level, 20) < self.threshold:
            return
        self.lines += 1
        millis = int(when % 1 * 1000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when)) + f".{millis:03d}Z"
        node = self._node.node_id
        if self.fmt == "json":
            record: dict[str, Any] = {
                "time": stamp, "node": node, "handle": format_handle(handle),
                "level": level, "text": text,
            }
            self.out.write(json.dumps(record) + "\n")
        else:
            self.out.write(f"{stamp} node={node} {format_handle(handle)} {level.upper()} {text}\n")
        self.out.flush()

    @expose
    def count(self) -> int:
        """Lines written so far."""
        return self.lines
