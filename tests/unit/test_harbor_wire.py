"""harbor.wire: frames and publications round-trip; every FrameError reason is raised."""

from __future__ import annotations

import msgpack
import pytest

from harbor import wire
from harbor.errors import FRAME_REASONS, FrameError, PayloadError

MAX = 1 << 20


def _frame(messages, *, src=(1, 11), dst=(2, 0)):
    return wire.encode_frame(src[0], src[1], dst[0], dst[1], messages)


def _reason(data: bytes, max_size: int = MAX) -> str:
    with pytest.raises(FrameError) as info:
        wire.decode_frame(data, max_size)
    return info.value.reason


def test_round_trip_keeps_fields_and_turns_payload_tuples_into_lists():
    msgs = [
        (2 << 32 | 5, 1 << 32 | 7, 42, 1, ("join", (1, "nick"))),
        (2 << 32 | 6, 1 << 32 | 7, 0, 0, {1: b"\x00bin", "k": [1.5, None, True]}),
        (2 << 32 | 6, 0, 2**40, 2, None),
    ]
    frame = wire.decode_frame(_frame(msgs, dst=(2, 22)), MAX)
    assert frame == (wire.VERSION, 1, 11, 2, 22, frame.messages)
    assert all(type(m) is tuple for m in frame.messages)
    assert frame.messages[0] == (2 << 32 | 5, 1 << 32 | 7, 42, 1, ["join", [1, "nick"]])
    assert frame.messages[1][4] == {1: b"\x00bin", "k": [1.5, None, True]}
    assert frame.messages[2] == msgs[2]


def test_join_frame_equals_encode_frame_for_every_batch_size_boundary():
    for n in (0, 1, 15, 16, 65535, 65536):
        msgs = [(1, 2, i, 0, None) for i in range(n)]
        joined = wire.join_frame(1, 11, 2, 0, [wire.encode_message(m) for m in msgs])
        whole = msgpack.packb([wire.VERSION, 1, 11, 2, 0, msgs], use_bin_type=True)
        assert joined == whole
        assert len(wire.decode_frame(joined, 1 << 24).messages) == n


def test_decode_reasons():
    good = _frame([(1, 2, 3, 0, "x" * 100)])
    assert _reason(b"") == "truncated"
    assert _reason(good[:-10]) == "truncated"
    assert _reason(good + b"\x00") == "decode"  # extra bytes
    assert _reason(b"\xc1") == "decode"  # a byte msgpack never uses
    assert _reason(msgpack.packb("hello")) == "decode"
    assert _reason(msgpack.packb([wire.VERSION, 1, 11, 2])) == "decode"
    assert _reason(msgpack.packb([wire.VERSION, 1, 11, 2, 0, [[1, 2, 3]]])) == "decode"
    assert _reason(msgpack.packb([wire.VERSION, 1, 11, 2, 0, [["a", 2, 3, 0, 0]]])) == "decode"
    assert _reason(msgpack.packb([wire.VERSION, "1", 11, 2, 0, []])) == "decode"
    assert _reason(b"\x91\xa2\xff\xfe") == "decode"  # invalid utf-8 in a str
    assert _reason(msgpack.packb([wire.VERSION + 1, 1, 11, 2, 0, []])) == "version"
    assert _reason(good, max_size=len(good) - 1) == "oversize"
    assert wire.decode_frame(good, max_size=len(good)).messages[0][2] == 3


def test_check_header_reasons():
    frame = wire.decode_frame(_frame([(1, 2, 3, 0, None)], dst=(2, 22)), MAX)
    wire.check_header(frame, 2, 22, {1: 11})
    wire.check_header(wire.decode_frame(_frame([]), MAX), 2, 22, {1: 11})  # 0 = any
    cases = [
        ((2, 22, {}), "nonmember"),
        ((2, 22, {1: 12}), "nonmember"),  # a stale incarnation of the sender
        ((3, 22, {1: 11}), "misrouted"),
        ((2, 23, {1: 11}), "stale-incarnation"),
    ]
    for (node, inc, members), reason in cases:
        with pytest.raises(FrameError) as info:
            wire.check_header(frame, node, inc, members)
        assert info.value.reason == reason


def test_every_reason_is_known():
    assert {"decode", "truncated", "oversize", "version", "nonmember", "stale-incarnation"} <= (
        FRAME_REASONS
    )
    with pytest.raises(AssertionError):
        FrameError("nonsense")


def test_encode_errors_are_payload_errors():
    with pytest.raises(PayloadError) as info:
        wire.encode_message((1, 2, 3, 0, object()))
    assert info.value.reason == "encode"
    with pytest.raises(PayloadError):
        wire.encode_message((1, 2, 3, 0))
    with pytest.raises(PayloadError):
        wire.encode_message((1, 2, 3, 0, 2**70))
    with pytest.raises(PayloadError):
        wire.encode_publication(1, 11, 5, {1, 2})


def test_publication_round_trip_and_no_empty_channel():
    topic = wire.channel_topic("chat")
    assert topic == b"chat\x00"
    pub = wire.decode_publication(topic, wire.encode_publication(1, 11, 7, ("hi", 1)), MAX)
    assert pub == ("chat", 1, 11, 7, ["hi", 1])
    with pytest.raises(FrameError, match="empty channel"):  # what heartbeats once used
        wire.decode_publication(b"\x00", wire.encode_publication(1, 11, 0, 9), MAX)


def test_publication_errors():
    body = wire.encode_publication(1, 11, 7, "x" * 50)
    with pytest.raises(ValueError):
        wire.channel_topic("")
    with pytest.raises(ValueError):
        wire.channel_topic("a\x00b")
    bad = [
        ((b"chat", body), "decode"),  # no NUL terminator
        ((b"\xff\x00", body), "decode"),
        ((b"chat\x00", body[:-3]), "truncated"),
        ((b"chat\x00", msgpack.packb([wire.VERSION + 1, 1, 11, 7, None])), "version"),
        ((b"chat\x00", msgpack.packb([wire.VERSION, 1, 11])), "decode"),
    ]
    for (topic, data), reason in bad:
        with pytest.raises(FrameError) as info:
            wire.decode_publication(topic, data, MAX)
        assert info.value.reason == reason
    with pytest.raises(FrameError) as info:
        wire.decode_publication(b"chat\x00", body, 10)
    assert info.value.reason == "oversize"


def _peek_reason(data: bytes, max_size: int = MAX) -> str:
    with pytest.raises(FrameError) as info:
        wire.peek_header(data, max_size)
    return info.value.reason


def test_peek_header_reads_only_the_header():
    msgs = [(1, 2, i, 0, "x" * 1000) for i in range(100)]
    data = _frame(msgs, src=(7, 70), dst=(2, 22))
    assert wire.peek_header(data, MAX) == (wire.VERSION, 7, 70, 2, 22, 100)
    # the rest is not looked at: garbage after the header does not matter to the peek
    assert wire.peek_header(data[:40] + b"\xc1" * 1000, MAX).src_node == 7
    assert _peek_reason(b"") == "truncated"
    assert _peek_reason(data[:5]) == "truncated"
    assert _peek_reason(b"\xc1") == "decode"
    assert _peek_reason(msgpack.packb({"a": 1})) == "decode"
    assert _peek_reason(msgpack.packb([wire.VERSION, "1", 11, 2, 0, []])) == "decode"
    assert _peek_reason(msgpack.packb([wire.VERSION + 1, 1, 11, 2, 0, []])) == "version"
    assert _peek_reason(msgpack.packb([wire.VERSION, 1, 11, 2, 0, "x" * 200])) == "decode"
    assert _peek_reason(data, max_size=len(data) - 1) == "oversize"


def test_msgpack_limits_refuse_huge_containers_cheaply():
    import time

    n = wire.MAX_CONTAINER_LEN + 1
    head = msgpack.packb([wire.VERSION, 1, 11, 2, 0])
    # a batch announcing 2**20+1 empty arrays: refused at the array header, not built
    data = b"\x96" + head[1:] + b"\xdd" + n.to_bytes(4, "big") + b"\x90" * n
    t0 = time.perf_counter()
    assert _reason(data, 1 << 24) == "decode"
    assert time.perf_counter() - t0 < 0.05
    # a map too large inside a payload
    big_map = b"\xdf" + n.to_bytes(4, "big") + b"\x00\x00" * n
    msg = b"\x95\x01\x02\x03\x00" + big_map
    assert _reason(b"\x96" + head[1:] + b"\x91" + msg, 1 << 24) == "decode"
    # ext types are never accepted
    assert (
        _reason(
            msgpack.packb([wire.VERSION, 1, 11, 2, 0, [[1, 2, 3, 0, None]]])[:-1] + b"\xd4\x01\x00"
        )
        == "decode"
    )


def test_wire_policy_admits_only_listed_kinds_and_events():
    policy = wire.WirePolicy(frozenset({0, 1}), 6, frozenset({"kill"}))
    assert policy.admits(0, None) and policy.admits(6, ["kill", None])
    assert not policy.admits(4, None)
    assert not policy.admits(6, ["start", []])
    assert not policy.admits(6, "kill")
    ok = _frame([(1, 2, 3, 0, None), (1, 2, 3, 6, ("kill", None))])
    assert len(wire.decode_frame(ok, MAX, policy).messages) == 2
    for bad in [(1, 2, 3, 5, None), (1, 2, 3, 6, ("start", ())), (1, 2, 3, 6, None)]:
        data = _frame([(1, 2, 3, 0, None), bad])
        with pytest.raises(FrameError) as info:
            wire.decode_frame(data, MAX, policy)
        assert info.value.reason == "kind"
        assert len(wire.decode_frame(data, MAX).messages) == 2  # no policy: accepted


def test_fast_header_agrees_with_the_full_parse() -> None:
    """peek_header's fast path (frames shaped as join_frame writes them) returns what
    msgpack's full parse says, for every int width and sign; anything else falls back."""
    import msgpack

    from harbor.wire import _fast_header, join_frame

    ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**32, 2**63 - 1,
            -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**63)]  # fmt: skip
    for i, a in enumerate(ints):
        b, c, d = ints[(i + 3) % len(ints)], ints[(i + 7) % len(ints)], ints[(i + 11) % len(ints)]
        for n in (0, 1, 15, 16, 65536):
            frame = join_frame(a, b, c, d, [msgpack.packb(None)] * n)
            full = msgpack.unpackb(frame)
            assert full[:5] == [wire.VERSION, a, b, c, d] and len(full[5]) == n
            assert _fast_header(frame) == wire.Header(wire.VERSION, a, b, c, d, n)
            assert wire.peek_header(frame, 1 << 30) == _fast_header(frame)
    # Not join_frame's shape: no fast answer, the full parse decides (and raises).
    for odd in (msgpack.packb([wire.VERSION, True, 1, 2, 0, []]),  # a bool is no id
                msgpack.packb([wire.VERSION + 1, 1, 1, 2, 0, []]),  # another version
                msgpack.packb([wire.VERSION, 1.0, 1, 2, 0, []]),  # a float
                join_frame(1, 1, 2, 0, [b"\xc0"])[:4]):  # cut inside the header
        assert _fast_header(odd) is None
        with pytest.raises(FrameError):
            wire.peek_header(odd, 1 << 20)
