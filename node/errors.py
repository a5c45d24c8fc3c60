"""Errors raised by the node runtime.

Every error a service or an embedding program can see from ``node`` derives
from :class:`SkymeshError`::

    SkymeshError
    ├── ConfigError            bad node configuration (the CLI exits with 2)
    ├── ServiceStartError      a new service's on_start raised; nothing remains of it
    ├── Interrupted            raised inside a handler broken from outside
    ├── SocketError            listen/connect failed (address in use, refused, timed out)
    ├── ReloadError            a live reload refused or its new code failed to import
    └── CallFailed             a call did not produce a reply value
        ├── CallError          the remote handler raised, or has no such handler
        ├── CallTimeout        no reply within the timeout
        ├── ServiceNotFound    the destination does not exist (at once, never a wait)
        ├── ServiceExited      the destination exited while the call was pending
        ├── NodeDown           the destination's node is not (or no longer) a member
        └── Overloaded         the destination's mailbox is at its limit (at once)

Coordination errors (``NameTaken``, ``LockLost``, ``LockTimeout``, ...) come
from ``coord.errors`` and are re-exported by ``node`` unchanged.
"""

from __future__ import annotations

__all__ = [
    "CallError",
    "CallFailed",
    "CallTimeout",
    "ConfigError",
    "Interrupted",
    "NodeDown",
    "Overloaded",
    "ReloadError",
    "ServiceExited",
    "ServiceNotFound",
    "ServiceStartError",
    "SkymeshError",
    "SocketError",
]


class SkymeshError(Exception):
    """Root of every error the node runtime raises."""


class ConfigError(SkymeshError):
    """A node configuration value is missing, malformed or out of range."""


class Interrupted(SkymeshError):
    """Raised inside a handler that was interrupted with ``Node.interrupt``."""


class ReloadError(SkymeshError):
    """A live reload was refused (a skymesh module, no source) or the module's new code
    failed to import; the old code keeps running. The message is one line saying why."""


class SocketError(SkymeshError):
    """A socket could not be opened: ``listen`` (address in use, bad address) or
    ``connect`` (refused, unreachable, timed out). Errors on an open connection
    are not raised: they arrive as ``on_socket_close(sock_id, "error: ...")``."""


class CallFailed(SkymeshError):
    """A ``call`` ended without a reply value."""


class CallError(CallFailed):
    """The remote handler raised, or the method is not exposed.

    Carries the remote exception's type name, message and formatted
    traceback so the caller can log where it failed on the other side.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "") -> None:
        super().__init__(f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class CallTimeout(CallFailed):
    """No reply arrived within the call's timeout; a late reply is dropped."""


class ServiceNotFound(CallFailed):
    """The destination handle or name does not name a live service."""


class ServiceExited(CallFailed):
    """The destination exited (or was killed) while the call was pending."""


class NodeDown(CallFailed):
    """The destination's node is not a member of the cluster, or just left it."""


class ServiceStartError(SkymeshError):
    """A new service's ``on_start`` raised; its handle has been freed.

    Carries the remote type, message and traceback like :class:`CallError`.
    """

    def __init__(self, remote_type: str, remote_message: str, remote_traceback: str = "") -> None:
        super().__init__(f"on_start failed: {remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class Overloaded(CallFailed):
    """The destination's mailbox holds ``mailbox_limit`` messages: the call is refused at
    once (a send is dropped and counted) rather than queued without bound."""
