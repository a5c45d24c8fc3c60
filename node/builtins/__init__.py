"""Built-in services: ordinary services that sit above the node and could be replaced.

``.logger`` (the log sink), ``.launcher`` (service lists and cluster-unique
hosting), ``.console`` (the operator's line console), the TCP gate
(:class:`Gate`, :class:`Agent`) and the WebSocket gate (:class:`WsGate`). The
node starts the first three by class path, as skynet's bootstrap does.
"""

from .console import Console, ConsoleAgent, parse_dest, start_console
from .gate import Agent, Gate, pack
from .launcher import Launcher
from .logger import Logger
from .wsgate import WsGate

__all__ = [
    "Agent",
    "Console",
    "ConsoleAgent",
    "Gate",
    "Launcher",
    "Logger",
    "WsGate",
    "pack",
    "parse_dest",
    "start_console",
]
