"""The node's core: mailboxes, the scheduler, the timer, the stuck-worker watchdog,
the one way a service coroutine suspends and the one place it is resumed.

The equivalent of skynet's C core, and like it self-contained: nothing here
imports the rest of ``node``, only the leaf modules (``node.message``,
``node.address``, ``node.errors``) and ``coord.errors``. What the runner
needs from the node it runs in is the :class:`Host` protocol; ``node.node``
wires the real one. ``lint-imports`` enforces this.

``mailbox`` and ``runner`` may be compiled (``node.core.native``); which build
runs is chosen here, before anything imports them.
"""

from . import native  # noqa: F401  (first: it chooses the build the imports below get)
from .faults import code_of, error_payload, exception_from
from .host import STATE_NAMES, Host, ServiceExit
from .mailbox import OVERLOAD_THRESHOLD, Mailbox
from .runner import Core
from .scheduler import WEIGHTS, Scheduler, Worker, batch_size
from .servicecore import ServiceCore
from .suspend import Wait, suspend
from .timer import TimerThread
from .watchdog import Watchdog

__all__ = [
    "OVERLOAD_THRESHOLD",
    "STATE_NAMES",
    "WEIGHTS",
    "Core",
    "Host",
    "Mailbox",
    "Scheduler",
    "ServiceCore",
    "ServiceExit",
    "TimerThread",
    "Wait",
    "Watchdog",
    "Worker",
    "batch_size",
    "code_of",
    "error_payload",
    "exception_from",
    "suspend",
]
