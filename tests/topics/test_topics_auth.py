"""Tokens on a live connection and the routes' permissions, over memory transports.

On trio's autojump clock a token's lifetime passes in no time: the Expiring
frame comes `refresh_lead` ahead, a Refresh moves both timers, and a token
left to run out closes the connection with 1008. The real-socket versions
are in tests/hub/test_hub_auth.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from join_support import join_ok
from memory_support import connect_memory, read_frames

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig
from hub.identity import Identity
from hub.permissions import PERSONAL, Action, Allow, Permissions
from hub.protocol import (
    JSON,
    Call,
    Ended,
    Error,
    Expiring,
    Frame,
    Heartbeat,
    Join,
    Payload,
    Publish,
    Refresh,
    Reply,
)
from hub.services import EchoService, RoomService, Service
from hub.tokens import TokenVerifier
from hub.topics import Member
from hub.transport import MemoryClient, TransportClosed

SECRET = "a-test-secret-that-is-long-enough-0123456789"
LEAD = 60.0
TTL = 120


class Guarded(EchoService):
    """An echo whose service decides who may publish and join (Allow.SERVICE)."""

    async def authorize(self, member: Member, action: Action) -> bool:
        return member.user == "ann"

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return {"event": event, "user": member.user}


class Unsure(Service):
    """A route leaves `join` to this service, which does not override `authorize`."""


def app() -> Hub:
    hub = Hub("auth")
    hub.route("open:*", EchoService)
    hub.route("members:*", RoomService, permissions=Permissions(join=Allow.AUTHENTICATED))
    hub.route(
        "granted:*",
        Guarded,
        permissions=Permissions(
            join=Allow.GRANTED, publish=Allow.GRANTED, call=Allow.GRANTED, history=Allow.GRANTED
        ),
    )
    hub.route("user:*", Guarded, permissions=PERSONAL)
    hub.route("svc:*", Guarded, permissions=Permissions(join=Allow.SERVICE, publish=Allow.SERVICE))
    hub.route("unsure:*", Unsure, permissions=Permissions(join=Allow.SERVICE))
    hub.route(
        "readonly:*",
        Guarded,
        permissions=Permissions(publish=lambda access: access.user == "editor"),
    )
    return hub


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    config = HubConfig.from_settings(
        {
            "server": {"port": 0},
            "auth": {"secret": SECRET, "refresh_lead_seconds": LEAD, "leeway_seconds": 0},
        }
    )
    running: HubRuntime = await nursery.start(serve_hub, app(), config)
    yield running


def tokens(runtime: HubRuntime) -> TokenVerifier:
    assert runtime.tokens is not None
    return runtime.tokens


def identity_of(runtime: HubRuntime, user: str, ttl: float = TTL, **options: Any) -> Identity:
    return tokens(runtime).verify(tokens(runtime).mint(user, ttl=ttl, **options))


async def request(client: MemoryClient, frame: Frame) -> Frame:
    """Send `frame` and return its answer (a Reply or an Error), past the Pushes on the way."""
    client.send(JSON.encode(frame))
    while True:
        [answer] = await read_frames(client, 1)
        if isinstance(answer, Reply | Error):
            return answer


async def closed(client: MemoryClient) -> TransportClosed:
    with pytest.raises(TransportClosed) as caught:
        while True:
            await client.receive()
    return caught.value


# --- a token's lifetime on a live connection ------------------------------------------


async def test_the_client_is_told_ahead_then_closed_1008_at_expiry(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, done = await connect_memory(runtime, nursery, identity=identity_of(runtime, "ann"))
    start = trio.current_time()
    [expiring] = await read_frames(client, 1)
    warned_at = trio.current_time() - start
    assert isinstance(expiring, Expiring)
    assert TTL - LEAD - 1 <= warned_at <= TTL - LEAD
    assert expiring.expires_in == pytest.approx(LEAD)
    end = await closed(client)
    assert (end.code, end.reason) == (1008, "token expired")
    assert TTL - 1 <= trio.current_time() - start <= TTL
    await done.wait()
    assert runtime.metrics.policy_closes._value.get() == 1


async def test_a_refresh_for_the_same_user_keeps_the_connection(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, _done = await connect_memory(runtime, nursery, identity=identity_of(runtime, "ann"))
    assert (await request(client, Join(1, "open:x"))).ok  # type: ignore[union-attr]
    [expiring] = await read_frames(client, 1)
    assert isinstance(expiring, Expiring)
    fresh = tokens(runtime).mint("ann", ttl=1000, topics=["granted:*"])
    refreshed_at = trio.current_time()
    reply = await request(client, Refresh(2, fresh))
    assert isinstance(reply, Reply) and reply.ok and reply.topic is None
    assert reply.payload == {"expires_in": pytest.approx(1000, abs=1.5)}
    # Past the old token's expiry, the connection and its membership go on,
    # and the new token's grants apply.
    await trio.sleep(TTL * 2)
    assert (await request(client, Heartbeat(3))) == Reply(3, None, True)
    assert (await request(client, Publish(4, "open:x", "e", 1))) == Reply(4, "open:x", True)
    assert (await request(client, Join(5, "granted:a"))).ok  # type: ignore[union-attr]
    # The new token is told ahead of its own end, and no second Expiring of the old one came.
    [expiring] = await read_frames(client, 1)
    assert isinstance(expiring, Expiring)
    assert 1000 - LEAD - 1 <= trio.current_time() - refreshed_at <= 1000 - LEAD
    assert (await closed(client)).code == 1008


async def test_a_refresh_that_narrows_the_grants_ends_the_memberships_it_no_longer_allows(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    ann = identity_of(runtime, "ann", topics=["granted:a", "granted:b"])
    client, _done = await connect_memory(runtime, nursery, identity=ann)
    for ref, topic in enumerate(("granted:a", "granted:b", "open:x"), start=1):
        assert (await request(client, Join(ref, topic))).ok  # type: ignore[union-attr]
    narrower = tokens(runtime).mint("ann", ttl=1000, topics=["granted:b"])
    reply = await request(client, Refresh(4, narrower))
    assert isinstance(reply, Reply) and reply.ok
    [ended] = await read_frames(client, 1)
    assert ended == Ended(
        "granted:a",
        "the refreshed token does not allow this: "
        "the token does not grant 'join' on topic 'granted:a'",
        "forbidden",
    )
    # The others go on; the one ended takes no more requests until joined again.
    assert (await request(client, Publish(5, "granted:b", "e", 1))) == Reply(5, "granted:b", True)
    assert (await request(client, Publish(6, "open:x", "e", 1))) == Reply(6, "open:x", True)
    refused = await request(client, Publish(7, "granted:a", "e", 1))
    assert isinstance(refused, Reply) and refused.error_code == "not_joined"


async def test_a_refresh_for_another_user_is_forbidden(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, _done = await connect_memory(runtime, nursery, identity=identity_of(runtime, "ann"))
    reply = await request(client, Refresh(1, tokens(runtime).mint("bob", ttl=1000)))
    assert reply == Reply.error(
        1,
        None,
        "forbidden",
        "a refreshed token must be for this connection's user 'ann', not 'bob'; "
        "connect again to change user",
    )
    # The old token still runs out.
    assert isinstance((await read_frames(client, 1))[0], Expiring)
    assert (await closed(client)).reason == "token expired"


async def test_a_bad_refresh_is_invalid_token_and_changes_nothing(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, _done = await connect_memory(runtime, nursery, identity=identity_of(runtime, "ann"))
    forged = TokenVerifier("x" * 40).mint("ann", ttl=1000)
    reply = await request(client, Refresh(1, forged))
    assert isinstance(reply, Reply) and reply.error_code == "invalid_token"
    assert reply.error_message == (
        "the token's signature is not valid (not signed with this hub's secret)"
    )
    assert forged not in JSON.encode(reply)
    anonymous, _ = await connect_memory(runtime, nursery)
    reply = await request(anonymous, Refresh(1, tokens(runtime).mint("ann", ttl=10)))
    assert isinstance(reply, Reply) and reply.error_code == "forbidden"
    assert reply.error_message == "this connection has no user; connect with a token to have one"


async def test_a_connection_without_a_token_never_expires(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, _done = await connect_memory(runtime, nursery, identity="carl")
    await trio.sleep(10 * TTL)
    assert await request(client, Heartbeat(1)) == Reply(1, None, True)


async def test_a_token_already_within_the_lead_is_warned_at_once(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    client, _done = await connect_memory(
        runtime, nursery, identity=identity_of(runtime, "ann", ttl=10)
    )
    start = trio.current_time()
    [expiring] = await read_frames(client, 1)
    # `exp` is in whole seconds (int(now + ttl)): up to a second short of the ttl.
    assert isinstance(expiring, Expiring) and 8.5 < expiring.expires_in <= 10
    assert trio.current_time() == start
    assert (await closed(client)).code == 1008


async def test_refresh_without_a_secret_says_the_hub_takes_no_tokens(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    runtime = await nursery.start(
        serve_hub, app(), HubConfig.from_settings({"server": {"port": 0}})
    )
    client, _done = await connect_memory(runtime, nursery, identity="ann")
    reply = await request(client, Refresh(1, "a.b.c"))
    assert reply == Reply.error(
        1, None, "invalid_token", "this hub takes no tokens (it has no auth.secret)"
    )


# --- permissions -----------------------------------------------------------------


async def test_authenticated_routes_refuse_anonymous_joins(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    anonymous, _ = await connect_memory(runtime, nursery)
    assert await request(anonymous, Join(1, "members:a")) == Reply.error(
        1,
        "members:a",
        "forbidden",
        "joining topic 'members:a' needs an authenticated connection (a token)",
    )
    ann, _ = await connect_memory(runtime, nursery, identity="ann")
    assert (await request(ann, Join(1, "members:a", {"user": "ann"}))).ok  # type: ignore[union-attr]


async def test_granted_routes_follow_the_tokens_grants(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    reader = identity_of(runtime, "ann", topics={"granted:*": ["join", "history"]})
    client, _ = await connect_memory(runtime, nursery, identity=reader)
    assert await request(client, Join(1, "granted:a")) == join_ok(1, "granted:a")
    assert await request(client, Publish(2, "granted:a", "e")) == Reply.error(
        2, "granted:a", "forbidden", "the token does not grant 'publish' on topic 'granted:a'"
    )
    assert await request(client, Publish(0, "granted:a", "e")) == Error(
        None, "forbidden", "the token does not grant 'publish' on topic 'granted:a'"
    )
    assert await request(client, Call(3, "granted:a", "ask")) == Reply.error(
        3, "granted:a", "forbidden", "the token does not grant 'call' on topic 'granted:a'"
    )
    # `$history` is a history read, which this token is granted (the service answers it).
    history = await request(client, Call(4, "granted:a", "$history"))
    assert isinstance(history, Reply) and history.error_code != "forbidden"
    other = identity_of(runtime, "bob", topics=["granted:b"])
    bob, _ = await connect_memory(runtime, nursery, identity=other)
    assert await request(bob, Join(1, "granted:a")) == Reply.error(
        1, "granted:a", "forbidden", "the token does not grant 'join' on topic 'granted:a'"
    )
    assert (await request(bob, Join(2, "granted:b"))).ok  # type: ignore[union-attr]
    assert (await request(bob, Publish(3, "granted:b", "e"))).ok  # type: ignore[union-attr]


async def test_a_personal_topic_is_joined_by_its_user_only(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    ann, _ = await connect_memory(runtime, nursery, identity=identity_of(runtime, "ann"))
    assert (await request(ann, Join(1, "user:ann"))).ok  # type: ignore[union-attr]
    assert (await request(ann, Publish(2, "user:ann", "note"))).ok  # type: ignore[union-attr]
    assert await request(ann, Join(3, "user:bob")) == Reply.error(
        3,
        "user:bob",
        "forbidden",
        "topic 'user:bob' is user 'bob''s own: only that user may be joining it",
    )
    anonymous, _ = await connect_memory(runtime, nursery)
    reply = await request(anonymous, Join(1, "user:ann"))
    assert isinstance(reply, Reply) and reply.error_code == "forbidden"


async def test_the_service_decides_what_the_route_leaves_to_it(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    ann, _ = await connect_memory(runtime, nursery, identity="ann")
    bob, _ = await connect_memory(runtime, nursery, identity="bob")
    assert (await request(ann, Join(1, "svc:a"))).ok  # type: ignore[union-attr]
    assert await request(bob, Join(1, "svc:a")) == Reply.error(
        1,
        "svc:a",
        "forbidden",
        "the service of topic 'svc:a' does not allow this connection to join",
    )
    assert (await request(ann, Publish(2, "svc:a", "e", 1))).ok  # type: ignore[union-attr]
    # A service that leaves `authorize` alone refuses: a decision left to it must be made.
    unsure = await request(ann, Join(3, "unsure:a"))
    assert isinstance(unsure, Reply) and unsure.error_code == "forbidden"


async def test_a_rule_function_decides_per_connection(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    editor, _ = await connect_memory(runtime, nursery, identity="editor")
    viewer, _ = await connect_memory(runtime, nursery, identity="viewer")
    for client in (editor, viewer):
        assert (await request(client, Join(1, "readonly:a"))).ok  # type: ignore[union-attr]
    assert await request(viewer, Publish(2, "readonly:a", "e")) == Reply.error(
        2,
        "readonly:a",
        "forbidden",
        "publishing to topic 'readonly:a' is not allowed for this connection",
    )
    assert (await request(editor, Publish(2, "readonly:a", "e"))).ok  # type: ignore[union-attr]


async def test_publishing_to_a_topic_not_joined_is_refused(
    runtime: HubRuntime, nursery: trio.Nursery
) -> None:
    client, _ = await connect_memory(runtime, nursery, identity="ann")
    assert await request(client, Publish(1, "open:x", "e")) == Reply.error(
        1, "open:x", "not_joined", "topic 'open:x' not joined"
    )
