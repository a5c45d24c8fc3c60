"""The harbor wire format: versioned msgpack frames.

Actor frames (PUSH -> PULL, one ZeroMQ message each) are one msgpack array::

    [VERSION, src_node, src_incarnation, dst_node, dst_incarnation, [msg, msg, ...]]
    msg = [dest_handle, source_handle, session, kind, payload]

``dst_incarnation`` 0 means "any incarnation of dst_node"; otherwise the
receiver drops the frame unless it is its own incarnation (replies are pinned
so a node restarted with the same id never gets its predecessor's replies).
The batch is one array so a frame costs one ``unpackb`` on the way in.

Channel publications (PUB -> SUB) are two-part ZeroMQ messages::

    topic = channel.encode("utf-8") + b"\\x00"
    body  = [VERSION, src_node, src_incarnation, source_handle, payload]

The NUL terminator makes SUB prefix matching exact ("chat" does not match
"chatroom"). The empty channel is reserved: topic ``b"\\x00"`` is the harbor
heartbeat, whose ``source_handle`` is 0 and payload a sequence number.

Payloads are msgpack with ``use_bin_type=True`` on the way out and
``raw=False, strict_map_key=False`` on the way in: ``bytes`` and ``str`` stay
distinct, maps may have int keys, and **tuples come back as lists** (a
message itself comes back as a tuple; what is inside its payload does not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

import msgpack

from harbor.errors import FrameError, PayloadError

__all__ = [
    "FRAME_OVERHEAD",
    "HEARTBEAT_TOPIC",
    "VERSION",
    "Frame",
    "Publication",
    "channel_topic",
    "check_header",
    "decode_frame",
    "decode_publication",
    "encode_frame",
    "encode_heartbeat",
    "encode_message",
    "encode_publication",
    "join_frame",
]

VERSION: Final = 1
HEARTBEAT_TOPIC: Final = b"\x00"
# Upper bound of everything in a frame but its encoded messages: the outer
# array header, five ints of at most 9 bytes each and the batch array header.
FRAME_OVERHEAD: Final = 64

Message = tuple[int, int, int, int, Any]


class Frame(NamedTuple):
    """A decoded actor frame; ``messages`` are ``(dest, source, session, kind, payload)`` tuples."""

    version: int
    src_node: int
    src_incarnation: int
    dst_node: int
    dst_incarnation: int
    messages: list[Message]


class Publication(NamedTuple):
    """A decoded channel publication; ``channel`` is ``""`` for a heartbeat."""

    channel: str
    src_node: int
    src_incarnation: int
    source: int
    payload: Any


def _pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _array_header(n: int) -> bytes:
    """The msgpack header of an array of ``n`` elements."""
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def encode_message(msg: Sequence[Any]) -> bytes:
    """Encode one ``(dest, source, session, kind, payload)`` message for :func:`join_frame`.

    Raises ``PayloadError("encode")`` if the message is not five items or its
    payload is not msgpack-able.
    """
    if len(msg) != 5:
        raise PayloadError("encode", f"a message has 5 items, got {len(msg)}")
    try:
        return _pack(msg)
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError
        raise PayloadError("encode", f"{type(exc).__name__}: {exc}") from None


def join_frame(
    src_node: int, src_inc: int, dst_node: int, dst_inc: int, encoded: Sequence[bytes]
) -> bytes:
    """Build a frame from messages already encoded by :func:`encode_message`.

    The result decodes exactly like :func:`encode_frame` of the same messages.
    """
    head = _array_header(6) + _pack(VERSION) + _pack(src_node) + _pack(src_inc)
    head += _pack(dst_node) + _pack(dst_inc) + _array_header(len(encoded))
    return head + b"".join(encoded)


def encode_frame(
    src_node: int, src_inc: int, dst_node: int, dst_inc: int, messages: Sequence[Sequence[Any]]
) -> bytes:
    """Encode a frame carrying ``messages``. Raises ``PayloadError("encode")``."""
    return join_frame(src_node, src_inc, dst_node, dst_inc, [encode_message(m) for m in messages])


def _unpack(data: bytes) -> Any:
    """msgpack-decode ``data`` or raise ``FrameError`` "truncated"/"decode"."""
    if not data:
        raise FrameError("truncated", "empty")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except ValueError as exc:
        # msgpack reports a cut-short buffer as a plain ValueError; its
        # subclasses (ExtraData, FormatError, StackError, UnicodeDecodeError)
        # are all malformed input.
        if type(exc) is ValueError and "incomplete" in str(exc):
            raise FrameError("truncated") from None
        raise FrameError("decode", type(exc).__name__) from None
    except Exception as exc:  # e.g. TypeError: unhashable map key
        raise FrameError("decode", type(exc).__name__) from None


def _is_int(x: Any) -> bool:
    return type(x) is int


def decode_frame(data: bytes, max_size: int) -> Frame:
    """Decode one actor frame.

    Raises ``FrameError`` with reason "oversize" (``len(data) > max_size``),
    "truncated", "decode" (not msgpack or not frame-shaped) or "version".
    """
    if len(data) > max_size:
        raise FrameError("oversize", f"{len(data)} > {max_size} bytes")
    obj = _unpack(data)
    if type(obj) is not list or not obj or not _is_int(obj[0]):
        raise FrameError("decode", "not a frame")
    if obj[0] != VERSION:
        raise FrameError("version", f"version {obj[0]}, expected {VERSION}")
    if len(obj) != 6 or not all(_is_int(x) for x in obj[1:5]) or type(obj[5]) is not list:
        raise FrameError("decode", "bad header")
    messages: list[Message] = []
    append = messages.append
    for m in obj[5]:
        if (
            type(m) is not list
            or len(m) != 5
            or type(m[0]) is not int
            or type(m[1]) is not int
            or type(m[2]) is not int
            or type(m[3]) is not int
        ):
            raise FrameError("decode", "bad message")
        append((m[0], m[1], m[2], m[3], m[4]))
    return Frame(obj[0], obj[1], obj[2], obj[3], obj[4], messages)


def check_header(frame: Frame, node_id: int, incarnation: int, members: Mapping[int, int]) -> None:
    """Check a decoded frame against the receiver's identity and peer set.

    ``members`` maps each peer node id to its current incarnation. Raises
    ``FrameError`` "nonmember" (sender id or incarnation not a member),
    "misrouted" (addressed to another node id) or "stale-incarnation"
    (pinned to an incarnation of this node other than ``incarnation``).
    """
    if members.get(frame.src_node) != frame.src_incarnation:
        raise FrameError("nonmember", f"node {frame.src_node}/{frame.src_incarnation}")
    if frame.dst_node != node_id:
        raise FrameError("misrouted", f"for node {frame.dst_node}")
    if frame.dst_incarnation not in (0, incarnation):
        raise FrameError("stale-incarnation", f"for incarnation {frame.dst_incarnation}")


def channel_topic(channel: str) -> bytes:
    """The SUB/PUB topic of ``channel``. Raises ``ValueError`` for "" or a name with NUL."""
    if not channel or "\x00" in channel:
        raise ValueError(f"bad channel name {channel!r}: must be non-empty, without NUL")
    return channel.encode("utf-8") + b"\x00"


def encode_publication(src_node: int, src_inc: int, source: int, payload: Any) -> bytes:
    """Encode the body of a publication. Raises ``PayloadError("encode")``."""
    try:
        return _pack((VERSION, src_node, src_inc, source, payload))
    except Exception as exc:  # msgpack raises TypeError, ValueError, OverflowError
        raise PayloadError("encode", f"{type(exc).__name__}: {exc}") from None


def encode_heartbeat(src_node: int, src_inc: int, seq: int) -> bytes:
    """Encode a heartbeat body (send it under :data:`HEARTBEAT_TOPIC`)."""
    return encode_publication(src_node, src_inc, 0, seq)


def decode_publication(topic: bytes, body: bytes, max_size: int) -> Publication:
    """Decode a two-part publication; a heartbeat comes back with ``channel == ""``.

    Raises ``FrameError`` "oversize", "truncated", "decode" or "version".
    """
    if len(body) + len(topic) > max_size:
        raise FrameError("oversize", f"{len(body) + len(topic)} > {max_size} bytes")
    if not topic.endswith(b"\x00"):
        raise FrameError("decode", "topic without NUL")
    try:
        channel = topic[:-1].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("decode", "topic not utf-8") from None
    obj = _unpack(body)
    if type(obj) is not list or not obj or not _is_int(obj[0]):
        raise FrameError("decode", "not a publication")
    if obj[0] != VERSION:
        raise FrameError("version", f"version {obj[0]}, expected {VERSION}")
    if len(obj) != 5 or not all(_is_int(x) for x in obj[1:4]):
        raise FrameError("decode", "bad publication header")
    return Publication(channel, obj[1], obj[2], obj[3], obj[4])
