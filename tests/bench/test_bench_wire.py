"""The load generator's hand-packed frames are the protocol's own bytes."""

from __future__ import annotations

from hub.bench import wire
from hub.protocol import MSGPACK, Call, Heartbeat, Join, Leave, Publish, Push, Reply


def test_requests_are_packed_as_the_codec_packs_them():
    assert wire.join(1, "echo:bench-0", {}) == MSGPACK.encode(Join(1, "echo:bench-0", {}))
    assert wire.join(7, "room:bench", {"user": "ann"}) == MSGPACK.encode(
        Join(7, "room:bench", {"user": "ann"})
    )
    assert wire.call(3, "echo:bench-1", "echo", "x" * 64) == MSGPACK.encode(
        Call(3, "echo:bench-1", "echo", "x" * 64)
    )
    assert wire.publish(0, "room:bench", "message", {"text": "hi"}) == MSGPACK.encode(
        Publish(0, "room:bench", "message", {"text": "hi"})
    )
    assert wire.heartbeat(9) == MSGPACK.encode(Heartbeat(9))
    assert wire.leave(5, "room:bench") == MSGPACK.encode(Leave(5, "room:bench"))


def test_server_frames_and_batches_read_as_lists():
    reply = Reply(4, "echo:a", True, "pong")
    push = Push("room:a", "message", {"user": "u", "text": "t", "at": 1.5}, 3)
    [frame] = wire.frames(MSGPACK.encode(reply))
    assert frame[:4] == [wire.REPLY, 4, "echo:a", True]
    assert frame[4] == "pong"
    frames = wire.frames(MSGPACK.encode_batch([push, reply]))
    assert [frame[0] for frame in frames] == [wire.PUSH, wire.REPLY]
    assert frames[0][3] == {"user": "u", "text": "t", "at": 1.5}


def test_a_push_sized_for_the_baselines_is_the_servers_push():
    payload = {"user": "pub", "text": "x" * 64, "at": 0.5}
    assert len(wire.push("room:bench", "message", payload, 200)) == len(
        MSGPACK.encode(Push("room:bench", "message", payload, 200))
    )
