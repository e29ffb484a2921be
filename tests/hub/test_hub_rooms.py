"""The built-in rooms, end to end: history on join, recovery by offset, limits, who speaks."""

from __future__ import annotations

import trio

from hub.app import Hub
from hub.protocol import Join, Push, Reply
from hub.services import RoomService
from hub.services.rooms import MAX_TEXT


async def test_history_is_replayed_after_the_ok_reply_as_pushes_with_offsets(hub):
    with trio.fail_after(10):
        async with hub.client() as ann, hub.client("msgpack") as bob:
            await ann.join_ok("room:h", {"user": "ann"})
            for index in range(3):
                await ann.publish_acked("room:h", "message", {"text": f"m{index}"})

            ref = bob.next_ref()
            await bob.send(Join(ref, "room:h", {"user": "bob"}))
            frames = [await bob.next_frame() for _ in range(4)]
            reply = frames[0]
            assert isinstance(reply, Reply) and (reply.ref, reply.ok) == (ref, True)
            assert reply.payload["members"] == 2
            # The room's history position: its epoch, and the last offset kept.
            assert reply.payload["offset"] == 3 and reply.payload["epoch"]
            assert [(f.event, f.payload["text"], f.offset) for f in frames[1:]] == [
                ("message", "m0", 1),
                ("message", "m1", 2),
                ("message", "m2", 3),
            ]
            assert all(isinstance(f, Push) and f.payload["user"] == "ann" for f in frames[1:])


async def test_rejoin_with_an_offset_gets_only_newer_events(hub):
    with trio.fail_after(10):
        async with hub.client() as ann, hub.client() as bob:
            await ann.join_ok("room:r", {"user": "ann"})
            await bob.join_ok("room:r", {"user": "bob"})
            for index in range(3):
                await ann.publish_acked("room:r", "message", {"text": f"m{index}"})
            seen = [(await bob.next_push("room:r")).offset for _ in range(3)]
            assert seen == [1, 2, 3]

            assert (await bob.leave("room:r")).ok
            for index in range(3, 5):
                await ann.publish_acked("room:r", "message", {"text": f"m{index}"})

            await bob.join_ok("room:r", {"user": "bob"}, offset=3)
            newer = [await bob.next_push("room:r") for _ in range(2)]
            assert [(push.payload["text"], push.offset) for push in newer] == [
                ("m3", 4),
                ("m4", 5),
            ]
            # Nothing else was replayed: the room's next answer comes straight after.
            members = await bob.call("room:r", "members")
            assert members.payload == ["ann", "bob"]
            assert bob.take_unread() == []


async def test_message_over_the_limit_is_refused_with_bad_field(hub):
    with trio.fail_after(10):
        async with hub.client() as ann:
            await ann.join_ok("room:l", {"user": "ann"})
            reply = await ann.publish_acked("room:l", "message", {"text": "x" * (MAX_TEXT + 1)})
            assert reply.error_code == "bad_field", reply
            assert str(MAX_TEXT) in reply.error_message
            reply = await ann.publish_acked("room:l", "message", {"text": "x" * MAX_TEXT})
            assert reply.ok
            push = ann.take_unread()
            assert [frame.payload["text"] for frame in push] == ["x" * MAX_TEXT]


async def test_the_user_comes_from_the_join_not_the_payload(hub):
    with trio.fail_after(10):
        async with hub.client() as mallory, hub.client() as bob:
            await mallory.join_ok("room:s", {"user": "mallory"})
            await bob.join_ok("room:s", {"user": "bob"})
            await mallory.publish_acked(
                "room:s", "message", {"text": "I am bob", "user": "bob", "from": "bob"}
            )
            push = await bob.next_push("room:s")
            assert push.payload["user"] == "mallory"
            assert set(push.payload) == {"user", "text", "at"}


async def test_join_without_a_user_is_refused(hub):
    with trio.fail_after(10):
        async with hub.client() as client:
            reply = await client.join("room:u")
            assert reply.error_code == "bad_field"
            reply = await client.join("room:u", {"user": "x" * 41})
            assert reply.error_code == "bad_field"


async def test_rooms_that_announce_members_tell_everyone_who_is_present(start_hub):
    app = Hub("announcing rooms")
    app.route("room:*", lambda topic: RoomService(topic, announce_members=True))
    running = await start_hub(app)
    with trio.fail_after(10):
        async with running.client() as ann, running.client("msgpack") as bob:
            await ann.join_ok("room:p", {"user": "ann"})
            assert (await ann.next_push("room:p")).payload == {"members": 1, "joined": "ann"}
            await bob.join_ok("room:p", {"user": "bob"})
            bob_came = {"members": 2, "joined": "bob"}
            assert (await ann.next_push("room:p")).payload == bob_came
            assert (await bob.next_push("room:p")).payload == bob_came
            assert (await bob.leave("room:p")).ok
            push = await ann.next_push("room:p")
            assert (push.event, push.payload) == ("members", {"members": 1, "left": "bob"})


async def test_a_user_name_is_measured_as_sent_not_as_stripped(hub):
    with trio.fail_after(10):
        async with hub.client() as ann:
            refused = await ann.join("room:u", {"user": "x" + " " * 100_000})
            assert not refused.ok
            assert refused.error_code == "bad_field"
            refused = await ann.join("room:u", {"user": "   "})
            assert refused.error_code == "bad_field"
