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
"chatroom"). The empty channel does not exist: a publication under topic
``b"\\x00"`` is refused ("decode"). Liveness is not on the wire: libzmq's ZMTP
heartbeats carry it (:mod:`harbor._ioloop`).

Decoding is bounded: a frame longer than ``max_size`` is refused before it is
parsed; its header (the first :data:`FRAME_OVERHEAD` bytes) is read alone by
:func:`peek_header`, so the receiver checks who sent it and for whom before it
decodes the messages; the messages are then decoded with explicit msgpack
limits (:data:`MAX_CONTAINER_LEN` elements per array or map, strings and
binaries up to ``max_size``). An allowed frame can still expand to many Python
objects (an empty array costs one byte on the wire and ~64 in memory): only
authenticated members can send one (see docs/design.md, "Trust").

Payloads are msgpack with ``use_bin_type=True`` on the way out and
``raw=False, strict_map_key=False`` on the way in: ``bytes`` and ``str`` stay
distinct, maps may have int keys, and **tuples come back as lists** (a
message itself comes back as a tuple; what is inside its payload does not).
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from struct import unpack_from
from typing import Any, Final, NamedTuple

import msgpack

from harbor.errors import FrameError, PayloadError

__all__ = [
    "FRAME_OVERHEAD",
    "MAX_CONTAINER_LEN",
    "VERSION",
    "Frame",
    "Header",
    "Publication",
    "WirePolicy",
    "channel_topic",
    "check_header",
    "decode_frame",
    "decode_publication",
    "encode_frame",
    "encode_message",
    "encode_publication",
    "join_frame",
    "peek_header",
]

VERSION: Final = 1
# Upper bound of everything in a frame but its encoded messages: the outer
# array header, five ints of at most 9 bytes each and the batch array header.
FRAME_OVERHEAD: Final = 64
# Elements of one msgpack array or map accepted on the way in (a batch of messages included:
# frames are packed up to 256 KiB, far fewer than this many messages).
MAX_CONTAINER_LEN: Final = 1 << 20

Message = tuple[int, int, int, int, Any]


class Frame(NamedTuple):
    """A decoded actor frame; ``messages`` are ``(dest, source, session, kind, payload)`` tuples."""

    version: int
    src_node: int
    src_incarnation: int
    dst_node: int
    dst_incarnation: int
    messages: list[Message]


class Header(NamedTuple):
    """The header of an actor frame, read before its messages; ``n_messages`` is the batch size."""

    version: int
    src_node: int
    src_incarnation: int
    dst_node: int
    dst_incarnation: int
    n_messages: int


@dataclass(frozen=True, slots=True)
class WirePolicy:
    """Which messages a transport accepts from the network; a frame with any other is dropped.

    The kinds are the node's (harbor does not know what they mean): a message is
    accepted if its kind is in ``kinds``, or its kind is ``event_kind`` and its
    payload is ``[event, data]`` with ``event`` in ``events``.

    Example (the node's own constants)::

        WirePolicy(frozenset({SEND, CALL, REPLY, ERROR}), SYSTEM,
                   frozenset({"kill", "monitor", "demonitor", "down"}))
    """

    kinds: frozenset[int]
    event_kind: int | None = None
    events: frozenset[str] = frozenset()

    def admits(self, kind: int, payload: Any) -> bool:
        """True if a message of ``kind`` with ``payload`` may come from the network."""
        if kind in self.kinds:
            return True
        return (
            kind == self.event_kind
            and type(payload) is list
            and len(payload) == 2
            and payload[0] in self.events
        )


class Publication(NamedTuple):
    """A decoded channel publication."""

    channel: str
    src_node: int
    src_incarnation: int
    source: int
    payload: Any


# One msgpack Packer per thread (msgpack.packb builds a new one per call, which costs more
# than packing a small message). Owner: each thread its own; dropped after an error, so a
# half-written buffer is never reused.
_packers = threading.local()


def _pack(obj: Any) -> bytes:
    packer = getattr(_packers, "p", None)
    if packer is None:
        packer = _packers.p = msgpack.Packer(use_bin_type=True)
    try:
        data: bytes = packer.pack(obj)
    except BaseException:
        _packers.p = None
        raise
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
    # The five header ints packed as one array, whose 1-byte header (0x95) becomes the
    # frame's (0x96: the messages array is the sixth element).
    head = b"\x96" + _pack((VERSION, src_node, src_inc, dst_node, dst_inc))[1:]
    return head + _array_header(len(encoded)) + b"".join(encoded)


def encode_frame(
    src_node: int, src_inc: int, dst_node: int, dst_inc: int, messages: Sequence[Sequence[Any]]
) -> bytes:
    """Encode a frame carrying ``messages``. Raises ``PayloadError("encode")``."""
    return join_frame(src_node, src_inc, dst_node, dst_inc, [encode_message(m) for m in messages])


def _unpack(data: bytes | memoryview, max_size: int) -> Any:
    """msgpack-decode ``data`` or raise ``FrameError`` "truncated"/"decode".

    ``unpackb`` has no ``max_buffer_size`` (the buffer is its input): the
    callers' ``len(data) > max_size`` check stands for it.
    """
    if not data:
        raise FrameError("truncated", "empty")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=False,
            use_list=True,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_array_len=MAX_CONTAINER_LEN,
            max_map_len=MAX_CONTAINER_LEN,
            max_ext_len=0,  # skymesh never sends ext types
        )
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


# msgpack int formats: type byte -> (size, struct format).
_INTS: Final = {
    0xCC: (1, ">B"), 0xCD: (2, ">H"), 0xCE: (4, ">I"), 0xCF: (8, ">Q"),
    0xD0: (1, ">b"), 0xD1: (2, ">h"), 0xD2: (4, ">i"), 0xD3: (8, ">q"),
}  # fmt: skip


def _fast_header(data: bytes | memoryview) -> Header | None:
    """The header of a frame shaped exactly as :func:`join_frame` writes it, or None
    (anything else: :func:`peek_header`'s full parse decides, with its errors).

    Same result as the full parse for every frame it accepts: a 6-element array,
    five msgpack ints of which the first is VERSION, an array header within
    MAX_CONTAINER_LEN.
    """
    b = bytes(data[:FRAME_OVERHEAD])
    try:
        if b[0] != 0x96:
            return None
        pos = 1
        vals: list[int] = []
        for _ in range(5):
            t = b[pos]
            if t <= 0x7F or t >= 0xE0:  # positive / negative fixint
                vals.append(t if t <= 0x7F else t - 0x100)
                pos += 1
                continue
            fmt = _INTS.get(t)
            if fmt is None:
                return None
            vals.append(unpack_from(fmt[1], b, pos + 1)[0])
            pos += 1 + fmt[0]
        t = b[pos]
        if 0x90 <= t <= 0x9F:
            count = t - 0x90
        elif t == 0xDC:
            count = unpack_from(">H", b, pos + 1)[0]
        elif t == 0xDD:
            count = unpack_from(">I", b, pos + 1)[0]
        else:
            return None
    except (IndexError, struct.error):  # cut short
        return None
    if vals[0] != VERSION or count > MAX_CONTAINER_LEN:
        return None
    return Header(vals[0], vals[1], vals[2], vals[3], vals[4], count)


def peek_header(data: bytes | memoryview, max_size: int) -> Header:
    """Read only the header of an actor frame (its first :data:`FRAME_OVERHEAD` bytes).

    Cheap whatever the frame's size, so identity checks run before the
    messages are decoded. Raises ``FrameError`` "oversize", "truncated",
    "decode" or "version".
    """
    if len(data) > max_size:
        raise FrameError("oversize", f"{len(data)} > {max_size} bytes")
    if not data:
        raise FrameError("truncated", "empty")
    fast = _fast_header(data)
    if fast is not None:
        return fast
    unpacker = msgpack.Unpacker(
        raw=False, max_buffer_size=FRAME_OVERHEAD, max_str_len=0, max_bin_len=0,
        max_array_len=MAX_CONTAINER_LEN, max_map_len=0, max_ext_len=0,
    )  # fmt: skip
    unpacker.feed(bytes(data[:FRAME_OVERHEAD]))
    try:
        if unpacker.read_array_header() < 1:
            raise FrameError("decode", "not a frame")
        version = unpacker.unpack()
        if not _is_int(version):
            raise FrameError("decode", "not a frame")
        if version != VERSION:
            raise FrameError("version", f"version {version}, expected {VERSION}")
        fields = [unpacker.unpack() for _ in range(4)]
        count = unpacker.read_array_header()
    except msgpack.OutOfData:
        # Cut short inside the header: a whole frame shorter than the peek is truncated;
        # a longer one has a header that does not end where a header must.
        reason = "truncated" if len(data) <= FRAME_OVERHEAD else "decode"
        raise FrameError(reason, "header") from None
    except ValueError:  # not an array where one must be, a str/bin/map in the header
        raise FrameError("decode", "bad header") from None
    if not all(_is_int(x) for x in fields):
        raise FrameError("decode", "bad header")
    return Header(version, fields[0], fields[1], fields[2], fields[3], count)


def decode_frame(
    data: bytes | memoryview, max_size: int, policy: WirePolicy | None = None
) -> Frame:
    """Decode one actor frame; with ``policy``, refuse messages it does not admit.

    Raises ``FrameError`` with reason "oversize" (``len(data) > max_size``),
    "truncated", "decode" (not msgpack, not frame-shaped, or over a msgpack
    limit), "version" or "kind" (a message ``policy`` refuses).
    """
    if len(data) > max_size:
        raise FrameError("oversize", f"{len(data)} > {max_size} bytes")
    obj = _unpack(data, max_size)
    if type(obj) is not list or not obj or not _is_int(obj[0]):
        raise FrameError("decode", "not a frame")
    if obj[0] != VERSION:
        raise FrameError("version", f"version {obj[0]}, expected {VERSION}")
    if len(obj) != 6 or not all(_is_int(x) for x in obj[1:5]) or type(obj[5]) is not list:
        raise FrameError("decode", "bad header")
    if policy is not None:
        kinds, admits = policy.kinds, policy.admits
        for m in obj[5]:
            # Shape errors are left to the loop below (reason "decode").
            if type(m) is list and len(m) == 5 and m[3] not in kinds and not admits(m[3], m[4]):
                raise FrameError("kind", f"message kind {m[3]!r}")
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


def check_header(
    frame: Frame | Header, node_id: int, incarnation: int, members: Mapping[int, int]
) -> None:
    """Check a frame's header (decoded or peeked) against the receiver's identity and peer set.

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


def decode_publication(topic: bytes, body: bytes, max_size: int) -> Publication:
    """Decode a two-part publication.

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
    if not channel:
        raise FrameError("decode", "empty channel")
    obj = _unpack(body, max_size)
    if type(obj) is not list or not obj or not _is_int(obj[0]):
        raise FrameError("decode", "not a publication")
    if obj[0] != VERSION:
        raise FrameError("version", f"version {obj[0]}, expected {VERSION}")
    if len(obj) != 5 or not all(_is_int(x) for x in obj[1:4]):
        raise FrameError("decode", "bad publication header")
    return Publication(channel, obj[1], obj[2], obj[3], obj[4])
