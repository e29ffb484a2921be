"""Long-polling sessions against a real hub: real HTTP requests on the hub's port.

A long-polling client is a session like any other: it chats with WebSocket
clients in one room, its memberships end when it stops polling, and it is
checked (origin, authentication) as a WebSocket upgrade is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest
import trio
from hub_support import counter_value, wait_until
from longpoll_support import HttpClient, LongPollClient, open_session

from hub.app import Hub
from hub.gateway import AuthenticationError, ConnectRequest
from hub.identity import Identity
from hub.protocol import JSON, MSGPACK, Call, Heartbeat, Join, Payload, Publish, Push, Reply
from hub.services import Service
from hub.tokens import TokenVerifier
from hub.topics import Member


def _frames(codec, messages):
    return [frame for message in messages for frame in codec.decode_strict(message)]


def _push_text(codec, message):
    return any(
        isinstance(frame, Push) and frame.event == "message"
        for frame in codec.decode_strict(message)
    )


class WhoAmI(Service):
    """Answers a join with the member's user: what authentication made of the client."""

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        return {"user": member.user}


@pytest.mark.parametrize("codec", [JSON, MSGPACK], ids=["json", "msgpack"])
async def test_a_long_polling_client_and_a_websocket_client_chat_in_one_room(hub, codec):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port, subprotocol=codec.subprotocol)
        assert poller.subprotocol == codec.subprotocol
        async with hub.client() as ann:
            await ann.join_ok("room:lp", {"user": "ann"})
            response = await poller.post(codec.encode(Join(1, "room:lp", {"user": "bob"})))
            assert response.status == 200
            joined = _frames(codec, await poller.poll())
            assert isinstance(joined[0], Reply) and joined[0].ok
            assert joined[0].payload["members"] == 2

            # WebSocket to long-polling...
            await ann.publish_acked("room:lp", "message", {"text": "hi bob"})
            got = _frames(codec, await poller.poll_until(lambda m: _push_text(codec, m)))
            pushes = [frame for frame in got if isinstance(frame, Push)]
            assert [(p.payload["user"], p.payload["text"]) for p in pushes] == [("ann", "hi bob")]

            # ...and back, several messages in one POST.
            await poller.post(
                codec.encode(Publish(0, "room:lp", "message", {"text": "hi ann"})),
                codec.encode(Publish(2, "room:lp", "message", {"text": "again"})),
            )
            heard = []
            while len(heard) < 3:
                push = await ann.next_push("room:lp")
                heard.append((push.payload["user"], push.payload["text"]))
            assert heard == [("ann", "hi bob"), ("bob", "hi ann"), ("bob", "again")]
        await poller.delete()
        await poller.aclose()


async def test_a_poll_takes_every_waiting_message_in_one_answer(hub):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        await poller.post(*(JSON.encode(Heartbeat(ref)) for ref in range(1, 6)))
        # The replies are all there, or come while the poll is held: one or
        # two answers, never one per message.
        got = await poller.poll()
        if len(got) < 5:
            got += await poller.poll()
        assert [frame.ref for frame in _frames(JSON, got)] == [1, 2, 3, 4, 5]
        assert poller.seq == 5
        await poller.aclose()


async def test_a_session_whose_client_stops_polling_is_reaped_and_its_membership_ends(
    start_hub,
):
    # No presence grace: the ended session's name is to go with its membership.
    hub = await start_hub(
        longpoll={"reap_timeout": 0.3, "poll_timeout": 5}, presence={"grace_seconds": 0}
    )
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        await poller.post(JSON.encode(Join(1, "room:reap", {"user": "gone"})))
        await poller.poll_until(lambda m: True)
        async with hub.client() as ann:
            reply = await ann.join_ok("room:reap", {"user": "ann"})
            assert reply.payload["members"] == 2
            assert hub.runtime.connection_count() == 2
            # The client polls no more: within reap_timeout its session ends...
            await wait_until(lambda: hub.runtime.connection_count() == 1)
            # ...its membership with it...
            members = await ann.call("room:reap", "members")
            assert members.payload == ["ann"]
        # ...and its id is no good any more.
        response = await poller.poll_response()
        assert response.status == 404
        await poller.aclose()


async def test_a_held_poll_keeps_the_session_alive_past_the_reap_timeout(start_hub):
    hub = await start_hub(longpoll={"reap_timeout": 0.2, "poll_timeout": 0.6})
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        # Held for poll_timeout (three reap timeouts), answered empty, and alive.
        assert await poller.poll() == []
        assert await poller.poll() == []
        await poller.post(JSON.encode(Heartbeat(7)))
        assert [frame.ref for frame in _frames(JSON, await poller.poll())] == [7]
        await poller.aclose()


async def test_the_close_is_the_last_answer_with_its_code_and_reason(start_hub):
    hub = await start_hub(websocket={"max_message_size": 1000})
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        await poller.post(JSON.encode(Heartbeat(1)))
        # A message over the size limit: refused, and the session closes with
        # 1009, as a WebSocket would.
        response = await poller.post(JSON.encode(Call(2, "room:x", "e", {"t": "x" * 2000})))
        assert response.status == 413
        assert b"1009" in response.body
        messages = await poller.poll()
        # What was queued before the Close still arrives, then the Close.
        assert [frame.ref for frame in _frames(JSON, messages)] == [1]
        assert poller.closed == (1009, "message larger than 1000 bytes")
        await wait_until(lambda: hub.runtime.connection_count() == 0)
        assert (await poller.poll_response()).status == 404
        await poller.aclose()


async def test_a_lost_answer_is_answered_again(hub):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        await poller.post(JSON.encode(Heartbeat(1)))
        first = await poller.poll()
        assert poller.seq == 1
        # The client says it has not received that answer (ack 0): it comes again.
        again = await poller.poll(ack=0)
        assert again == first and poller.seq == 1
        # An ack that matches nothing is a client bug: 409.
        assert (await poller.poll_response(ack=5)).status == 409
        await poller.post(JSON.encode(Heartbeat(2)))
        assert [frame.ref for frame in _frames(JSON, await poller.poll())] == [2]
        assert poller.seq == 2
        await poller.aclose()


async def test_a_second_poll_ends_the_held_one_with_an_empty_answer(hub):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        other = await HttpClient.connect(hub.port)
        await wait_until(lambda: hub.runtime.connection_count() == 1)
        (connected,) = hub.runtime.connections()
        transport = connected.session.transport
        async with trio.open_nursery() as nursery:
            answers: list = []

            async def hold() -> None:
                answers.append(await poller.poll_response())

            nursery.start_soon(hold)
            await wait_until(lambda: transport._poll is not None)
            # A client that thinks its poll is lost polls again: the newer
            # poll is the one held, the older one is answered at once, empty.
            async with trio.open_nursery() as inner:
                seconds: list = []

                async def hold_again() -> None:
                    seconds.append(await other.request("GET", f"{poller.url}?ack=0"))

                inner.start_soon(hold_again)
                await wait_until(lambda: bool(answers))
                assert answers[0].status == 200 and answers[0].body == b""
                await poller.post(JSON.encode(Heartbeat(3)))
        assert seconds[0].status == 200
        assert [frame.ref for frame in _frames(JSON, [seconds[0].body.decode()])] == [3]
        await other.aclose()
        await poller.aclose()


async def test_opening_is_checked_as_a_websocket_upgrade_is(start_hub):
    def authenticate(request: ConnectRequest) -> Identity:
        if request.query.get("token") != "good":
            raise AuthenticationError("a good token is needed")
        return Identity("ann")

    app = Hub("auth", authenticate=authenticate)
    app.route("who:*", WhoAmI)
    hub = await start_hub(app, server={"origins": ["https://good.example"]})
    with trio.fail_after(10):
        port = hub.port
        refused = await open_session(port, query={"token": "bad"})
        assert refused.status == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert b"a good token is needed" in refused.body
        foreign = await open_session(port, query={"token": "good"}, origin="https://evil.example")
        assert foreign.status == 403
        unknown = await open_session(port, offered="triohub.v9.xml", query={"token": "good"})
        assert unknown.status == 400 and b"triohub.v1.json" in unknown.body

        poller = await LongPollClient.open(
            port, query={"token": "good"}, origin="https://good.example"
        )
        await poller.post(JSON.encode(Join(1, "who:a", {})))
        reply = _frames(JSON, await poller.poll())[0]
        # The identity authenticate returned is the member's.
        assert reply.ok and reply.payload["user"] == "ann"

        # The session is bound to its origin: another one cannot use its id.
        poller.origin = "https://good.example.evil"
        assert (await poller.poll_response()).status == 403
        await poller.aclose()
        # Refusals are counted as the upgrade's are.
        assert counter_value(hub.metrics.rejections.labels(reason="auth")) == 1
        assert counter_value(hub.metrics.rejections.labels(reason="origin")) == 1


async def test_bad_requests_get_clear_answers_and_cost_the_session_nothing(hub):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        client = await HttpClient.connect(hub.port)
        assert (await client.request("GET", "/poll/not-a-session?ack=0")).status == 404
        assert (await client.request("GET", "/poll")).status == 405
        assert (await client.request("HEAD", f"{poller.url}?ack=0")).status == 405
        assert (await client.request("GET", f"{poller.url}?ack=-1")).status == 400
        # A malformed frame is answered like over a WebSocket: an Error frame.
        await poller.post("not json")
        error = _frames(JSON, await poller.poll())[0]
        assert error.code == "bad_encoding"
        await poller.post(JSON.encode(Heartbeat(4)))
        assert [frame.ref for frame in _frames(JSON, await poller.poll())] == [4]
        await client.aclose()
        await poller.aclose()


async def test_a_malformed_msgpack_body_closes_the_session_with_1002(hub):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port, subprotocol="triohub.v1.msgpack")
        response = await poller.post_body(b"\x00\x00\x00\x09abc")
        assert response.status == 400
        await poller.poll()
        assert poller.closed is not None and poller.closed[0] == 1002
        await poller.aclose()


async def test_delete_ends_the_session_and_its_memberships(start_hub):
    # No presence grace: the ended session's name is to go with its membership.
    hub = await start_hub(presence={"grace_seconds": 0})
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        await poller.post(JSON.encode(Join(1, "room:d", {"user": "bob"})))
        await poller.poll()
        async with hub.client() as ann:
            await ann.join_ok("room:d", {"user": "ann"})
            assert (await poller.delete()).status == 200
            await wait_until(lambda: hub.runtime.connection_count() == 1)
            assert (await ann.call("room:d", "members")).payload == ["ann"]
        await poller.aclose()


async def test_too_many_sessions_are_refused_with_503(start_hub):
    hub = await start_hub(longpoll={"max_sessions": 1})
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        refused = await open_session(hub.port)
        assert refused.status == 503 and refused.headers["retry-after"]
        await poller.delete()
        await wait_until(lambda: hub.runtime.connection_count() == 0)
        again = await open_session(hub.port)
        assert again.status == 200 and json.loads(again.body)["session"]
        await poller.aclose()


async def test_a_graceful_shutdown_answers_a_held_poll_with_1001(hub):
    with trio.fail_after(10):
        poller = await LongPollClient.open(hub.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.poll)
            await wait_until(lambda: hub.runtime.connection_count() == 1)
            await trio.testing.wait_all_tasks_blocked()
            hub.runtime.request_shutdown()
        assert poller.closed == (1001, "server shutting down")
        await poller.aclose()
        await hub.returned.wait()


async def test_long_polling_can_be_turned_off(start_hub):
    hub = await start_hub(longpoll={"enabled": False})
    with trio.fail_after(10):
        assert (await open_session(hub.port)).status in (404, 405)


async def test_a_signed_token_opens_a_session_as_over_a_websocket(start_hub):
    # The same authenticate path as the upgrade: signed tokens too (docs/auth.md).
    secret = "a-test-secret-that-is-long-enough-0123456789"
    app = Hub("tokens")
    app.route("who:*", WhoAmI)
    hub = await start_hub(app, auth={"secret": secret, "required": True})
    with trio.fail_after(10):
        anonymous = await open_session(hub.port)
        assert anonymous.status == 401
        forged = await open_session(hub.port, query={"token": "not.a.token"})
        assert forged.status == 401
        token = TokenVerifier(secret).mint("zoe", ttl=60)
        poller = await LongPollClient.open(hub.port, query={"token": token})
        await poller.post(JSON.encode(Join(1, "who:t", {})))
        reply = _frames(JSON, await poller.poll())[0]
        assert reply.ok and reply.payload["user"] == "zoe"
        await poller.delete()
        await poller.aclose()
