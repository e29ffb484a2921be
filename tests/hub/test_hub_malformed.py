"""Malformed input: an Error frame with the right code, a usable connection; 1008 for a flood."""

from __future__ import annotations

import msgpack
import pytest
import trio
from join_support import join_ok

from hub.protocol import JSON, MSGPACK, Error, Heartbeat, Message, Push, Reply
from hub.protocol.machine import MAX_MALFORMED

TOO_LONG_TOPIC = "room:" + "x" * 300

# (case, JSON message, msgpack message, expected code, expected ref)
CASES = [
    ("bad encoding", '[1,1,"room:a"', b"\xc1", "bad_encoding", None),
    ("wrong message type", b"[5,1]", "\x92\x05\x01", "bad_encoding", None),
    ("not an array", '{"kind":1}', msgpack.packb({"kind": 1}), "bad_frame", None),
    ("empty array", "[]", msgpack.packb([]), "bad_frame", None),
    ("unknown kind", "[99,7]", msgpack.packb([99, 7]), "unknown_kind", None),
    ("missing field", "[1,7]", msgpack.packb([1, 7]), "missing_field", 7),
    ("wrong field type", "[1,7,42]", msgpack.packb([1, 7, 42]), "bad_field", 7),
    ("ref out of range", "[5,-1]", msgpack.packb([5, -1]), "bad_field", None),
    ("too many fields", "[5,7,1,2]", msgpack.packb([5, 7, 1, 2]), "bad_frame", 7),
    (
        "topic too long",
        f'[1,7,"{TOO_LONG_TOPIC}"]',
        msgpack.packb([1, 7, TOO_LONG_TOPIC]),
        "topic_too_long",
        7,
    ),
    (
        "server-only kind",
        '[7,"room:a","message",{"text":"hi"}]',
        msgpack.packb([7, "room:a", "message", {"text": "hi"}]),
        "bad_frame",
        None,
    ),
    (
        "server-only reply",
        '[6,3,"room:a",true]',
        msgpack.packb([6, 3, "room:a", True]),
        "bad_frame",
        None,
    ),
]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize(
    ("json_message", "msgpack_message", "code", "ref"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_malformed_frame_gets_an_error_and_the_connection_stays_usable(
    hub, codec, json_message, msgpack_message, code, ref
):
    message: Message = json_message if codec == "json" else msgpack_message
    with trio.fail_after(10):
        async with hub.client(codec) as client:
            await client.join_ok("room:a", {"user": "ann"})
            await client.send_raw(message)
            error = await client.next_frame()
            assert isinstance(error, Error), error
            assert (error.code, error.ref) == (code, ref), error
            assert error.message
            # Still usable: a join and a publish go through after it.
            await client.join_ok("echo:after")
            await client.publish("room:a", "message", {"text": "still here"})
            push = await client.next_push("room:a")
            assert push.payload["text"] == "still here"
            assert (await client.heartbeat()).ok


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_one_bad_frame_in_a_batch_spoils_only_itself(hub, codec):
    with trio.fail_after(10):
        async with hub.client(codec) as client:
            wire = [[5, 1], [99, 2], [1, 3, "echo:b"], [5, 4]]
            batch = JSON._dumps(wire) if codec == "json" else MSGPACK._dumps(wire)
            await client.send_raw(batch)
            frames = [await client.next_frame() for _ in range(4)]
            assert frames[0] == Reply(1, None, True)
            assert isinstance(frames[1], Error) and frames[1].code == "unknown_kind"
            # The Join's Reply comes from its topic actor, so it may pass the heartbeat's.
            assert sorted(frames[2:], key=lambda frame: frame.ref) == [
                join_ok(3, "echo:b"),
                Reply(4, None, True),
            ]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
async def test_flood_of_malformed_frames_gets_close_1008(hub, codec):
    """Each bad frame still gets its Error; the one past the allowance also ends it."""
    bad: Message = "nope" if codec == "json" else b"\xc1"
    with trio.fail_after(10):
        async with hub.client(codec) as client:
            await client.join_ok("echo:x")
            for _ in range(MAX_MALFORMED + 1):
                await client.send_raw(bad)
            frames, reason = await client.expect_close()
        assert [frame.code for frame in frames] == ["bad_encoding"] * (MAX_MALFORMED + 1)
        assert (reason.code, reason.reason) == (1008, "too many malformed frames")
        assert hub.metrics.policy_closes._value.get() == 1


async def test_a_few_malformed_frames_do_not_close(hub):
    """The allowance itself: MAX_MALFORMED bad frames leave the connection open."""
    with trio.fail_after(10):
        async with hub.client("json") as client:
            await client.join_ok("echo:x")
            for _ in range(MAX_MALFORMED):
                await client.send_raw("nope")
            for _ in range(MAX_MALFORMED):
                assert (await client.next_frame()).code == "bad_encoding"
            await client.publish("echo:x", "ping", 1)
            assert await client.next_frame() == Push("echo:x", "ping", 1)
            await client.send(Heartbeat(99))
            assert await client.next_frame() == Reply(99, None, True)
