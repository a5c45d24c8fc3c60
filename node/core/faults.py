"""ERROR payloads: how an exception crosses a mailbox (or the network) and comes back.

An ERROR message's payload is ``(code, type_name, message, traceback)`` with
``code`` one of ``node.message.ERR_*``. :func:`error_payload` builds it,
:func:`exception_from` turns it back into the exception the caller raises.
Known skymesh and coord error types come back as themselves (by name);
anything else a handler raised comes back as ``CallError``.
"""

from __future__ import annotations

import traceback
from typing import Any

from coord import errors as coord_errors

from .. import errors as node_errors
from ..errors import (
    CallError,
    CallTimeout,
    NodeDown,
    ServiceExited,
    ServiceNotFound,
    ServiceStartError,
)
from ..message import (
    ERR_EXITED,
    ERR_HANDLER,
    ERR_LOCAL,
    ERR_NO_HANDLER,
    ERR_NODE_DOWN,
    ERR_NOT_FOUND,
    ERR_OTHER,
    ERR_START,
    ERR_TIMEOUT,
)

__all__ = ["code_of", "error_payload", "exception_from", "local_error", "simple_error"]

ErrorPayload = tuple[int, str, str, str]


def _known_errors() -> dict[str, type[BaseException]]:
    table: dict[str, type[BaseException]] = {}
    for mod in (node_errors, coord_errors):
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name)
            if isinstance(obj, type) and issubclass(obj, Exception):
                table[name] = obj
    return table


_KNOWN = _known_errors()


def error_payload(code: int, exc: BaseException, tb: str | None = None) -> ErrorPayload:
    """The ERROR payload describing ``exc`` (with its formatted traceback unless given)."""
    if tb is None:
        tb = "".join(traceback.format_exception(exc))
    return (code, type(exc).__name__, str(exc), tb)


def simple_error(exc: BaseException) -> ErrorPayload:
    """The ERROR payload of a typed skymesh/coord error, rebuilt by name, no traceback."""
    return (ERR_OTHER, type(exc).__name__, str(exc), "")


def local_error(exc: BaseException) -> tuple[int, str, str, BaseException]:
    """An ERROR payload that carries ``exc`` itself, for a waiter in this process
    (``offload``): the coroutine gets the very exception, any type. Never sent on
    the wire; one arriving from it is not trusted (see :func:`exception_from`)."""
    return (ERR_LOCAL, type(exc).__name__, str(exc), exc)


def code_of(err: BaseException) -> int:
    """The ERROR code that carries ``err`` to a caller as the same type."""
    return ERR_OTHER if type(err).__name__ in _KNOWN else ERR_HANDLER


def exception_from(payload: Any) -> BaseException:
    """The exception a caller raises for an ERROR ``payload``."""
    code, type_name, message, tb = payload
    if code == ERR_EXITED:
        return ServiceExited(message)
    if code == ERR_NOT_FOUND:
        return ServiceNotFound(message)
    if code == ERR_NODE_DOWN:
        return NodeDown(message)
    if code == ERR_TIMEOUT:
        return CallTimeout(message)
    if code == ERR_START:
        return ServiceStartError(type_name, message, tb)
    if code == ERR_LOCAL:
        if isinstance(tb, BaseException):
            return tb
        return CallError(str(type_name), str(message), "")
    if code == ERR_OTHER:
        cls = _KNOWN.get(type_name)
        if cls is not None:
            return cls(message)
    if code not in (ERR_HANDLER, ERR_NO_HANDLER, ERR_OTHER, ERR_LOCAL):
        return CallError("BadErrorCode", f"unknown error code {code!r}: {message}", "")
    return CallError(type_name, message, tb)
