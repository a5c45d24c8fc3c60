"""Message kinds and the envelope layout.

A message is a plain tuple ``(source, session, kind, payload)``. A tuple, not
a slotted class: it is built once per message on the hottest path and a tuple
costs a third of an object there. Payload by kind:

- ``SEND``/``CALL``: ``(method, args)``
- ``REPLY``: the return value
- ``ERROR``: ``(code, type_name, message, traceback)``, code one of ``ERR_*``
- ``TIMER``: ``None`` (a sleep ended), ``CALL_TIMEOUT`` or a timeout callback marker
- ``SYSTEM``: ``(event, data)``
"""

from __future__ import annotations

from typing import Any, Final

SEND: Final = 0
CALL: Final = 1
REPLY: Final = 2
ERROR: Final = 3
TIMER: Final = 4
SOCKET: Final = 5
SYSTEM: Final = 6

KIND_NAMES: Final = ("SEND", "CALL", "REPLY", "ERROR", "TIMER", "SOCKET", "SYSTEM")

# ERROR payload codes: which exception the caller raises.
ERR_HANDLER: Final = 0  # CallError: the handler raised
ERR_NO_HANDLER: Final = 1  # CallError "no handler"
ERR_EXITED: Final = 2  # ServiceExited
ERR_NOT_FOUND: Final = 3  # ServiceNotFound
ERR_START: Final = 4  # ServiceStartError
ERR_NODE_DOWN: Final = 5  # NodeDown
ERR_TIMEOUT: Final = 6  # CallTimeout (used by the timer for calls)
ERR_OTHER: Final = 7  # another typed error, rebuilt by name when known
ERR_LOCAL: Final = 8  # in-process only: payload[3] is the exception object itself

# TIMER payload marking a call's deadline rather than a sleep.
CALL_TIMEOUT: Final = "call-timeout"

Message = tuple[int, int, int, Any]
