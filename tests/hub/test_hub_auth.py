"""Tokens and permissions over real sockets: who gets in, and where.

A hub with `auth.secret` takes a signed token from `?token=` or
`Authorization: Bearer`; a bad one is a 401 that says what was wrong. A
token's connection is told ahead of its expiry, may refresh in-band, and is
closed 1008 if it does not. Routes' permissions refuse with `forbidden`.
"""

from __future__ import annotations

from typing import Any

import jwt
import pytest
import trio
import trio_websocket
from running_hub import RunningHub, StartHub

from hub.app import Hub
from hub.gateway import ConnectRequest
from hub.permissions import PERSONAL, Action, Allow, Permissions
from hub.protocol import SUBPROTOCOL_JSON, Error, Expiring, Publish, Refresh, Reply
from hub.services import EchoService, RoomService
from hub.tokens import TokenVerifier
from hub.topics import Member

SECRET = "a-test-secret-that-is-long-enough-0123456789"
TOKENS = TokenVerifier(SECRET)


class VipRoom(EchoService):
    """Leaves joins to its own check (Allow.SERVICE): members whose name starts with "vip"."""

    async def authorize(self, member: Member, action: Action) -> bool:
        return (member.user or "").startswith("vip")


def app() -> Hub:
    def cookie_user(request: ConnectRequest) -> object:
        # The application's own authenticator, for requests without a token.
        return request.headers.get("x-test-user")

    hub = Hub("auth", authenticate=cookie_user)
    hub.route("room:*", RoomService, permissions=Permissions(join=Allow.AUTHENTICATED))
    hub.route("user:*", EchoService, permissions=PERSONAL)
    hub.route(
        "granted:*",
        EchoService,
        permissions=Permissions(join=Allow.GRANTED, publish=Allow.GRANTED, history=Allow.GRANTED),
    )
    hub.route("vip:*", VipRoom, permissions=Permissions(join=Allow.SERVICE))
    hub.route(
        "board:*",
        EchoService,
        permissions=Permissions(call=lambda access: access.user == "editor"),
    )
    return hub


async def auth_hub(start_hub: StartHub, **auth: Any) -> RunningHub:
    return await start_hub(app(), auth={"secret": SECRET, **auth})


async def rejection(url: str, **options: Any) -> trio_websocket.ConnectionRejected:
    with pytest.raises(trio_websocket.ConnectionRejected) as caught:
        async with trio_websocket.open_websocket_url(
            url, subprotocols=[SUBPROTOCOL_JSON], **options
        ):
            raise AssertionError("the connection was accepted")
    return caught.value


@pytest.mark.parametrize("via", ["query", "header"])
async def test_a_good_token_connects_as_its_user(start_hub: StartHub, via: str) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub)
        token = TOKENS.mint("ann", ttl=600)
        options: dict[str, Any] = (
            {"query": f"token={token}"}
            if via == "query"
            else {"headers": [("Authorization", f"Bearer {token}")]}
        )
        async with running.client("msgpack", **options) as ann:
            await ann.join_ok("user:ann")
            refused = await ann.join("user:bob")
            assert refused.error_code == "forbidden"
            assert refused.error_message == (
                "topic 'user:bob' is user 'bob''s own: only that user may be joining it"
            )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (
            TokenVerifier("x" * 40).mint("ann", ttl=600),
            "the token's signature is not valid (not signed with this hub's secret)",
        ),
        (jwt.encode({"sub": "ann", "exp": 1}, SECRET), "the token has expired; get a new one"),
        (jwt.encode({"exp": 2**31}, SECRET), "the token lacks the 'sub' claim"),
        (jwt.encode({"sub": "ann"}, SECRET), "the token lacks the 'exp' claim"),
        ("garbage", "the token is malformed (not a signed JWT)"),
    ],
    ids=["forged", "expired", "no-sub", "no-exp", "malformed"],
)
async def test_a_bad_token_is_401_saying_what_was_wrong(
    start_hub: StartHub, token: str, reason: str
) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub)
        for options in (
            {},
            {"extra_headers": [(b"authorization", f"Bearer {token}".encode())]},
        ):
            query = "" if options else f"?token={token}"
            refused = await rejection(running.websocket_url + query, **options)
            assert refused.status_code == 401
            assert refused.body == reason.encode() + b"\n"
            assert token.encode() not in refused.body
            challenge = dict(refused.headers)[b"www-authenticate"]
            assert challenge == b'Bearer realm="triohub", error="invalid_token"'


async def test_without_a_token_the_applications_authenticator_decides(
    start_hub: StartHub,
) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub)
        async with running.client(headers=[("x-test-user", "carl")]) as carl:
            await carl.join_ok("user:carl")
            await carl.join_ok("room:a", {"user": "carl"})
        async with running.client() as anonymous:
            refused = await anonymous.join("room:a")
            assert refused.error_code == "forbidden"
            assert refused.error_message == (
                "joining topic 'room:a' needs an authenticated connection (a token)"
            )


async def test_required_tokens_refuse_an_anonymous_request(start_hub: StartHub) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub, required=True)
        refused = await rejection(running.websocket_url)
        assert refused.status_code == 401
        assert refused.body == (
            b"a token is required: send it as ?token=TOKEN or 'Authorization: Bearer TOKEN'\n"
        )
        token = TOKENS.mint("ann", ttl=600)
        async with running.client(query=f"token={token}") as ann:
            await ann.join_ok("user:ann")


async def test_grants_decide_join_and_publish(start_hub: StartHub) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub)
        token = TOKENS.mint("ann", ttl=600, topics={"granted:*": ["join"]})
        async with running.client(query=f"token={token}") as ann:
            await ann.join_ok("granted:a")
            refused = await ann.publish_acked("granted:a", "e", 1)
            assert refused == Reply.error(
                refused.ref,
                "granted:a",
                "forbidden",
                "the token does not grant 'publish' on topic 'granted:a'",
            )
            # Never to a topic not joined, whatever the grants.
            await ann.send(Publish(0, "granted:b", "e"))
            assert await ann.next_frame() == Error(
                None, "not_joined", "topic 'granted:b' not joined"
            )


async def test_a_live_token_is_warned_then_closed_1008(start_hub: StartHub) -> None:
    # A token of 2 s, a lead of 60: the warning comes at once, the close
    # within 2 s, as the hub's real timers run.
    with trio.fail_after(10):
        running = await auth_hub(start_hub, leeway_seconds=0, refresh_lead_seconds=60)
        token = TOKENS.mint("ann", ttl=2)
        async with running.client("msgpack", query=f"token={token}") as ann:
            expiring = await ann.next_frame()
            assert isinstance(expiring, Expiring) and 0 < expiring.expires_in <= 2
            frames, reason = await ann.expect_close()
            assert frames == []
            assert (reason.code, reason.reason) == (1008, "token expired")


async def test_a_refresh_over_a_socket_keeps_the_connection(start_hub: StartHub) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub, leeway_seconds=0, refresh_lead_seconds=60)
        token = TOKENS.mint("ann", ttl=2)
        async with running.client("json", query=f"token={token}") as ann:
            await ann.join_ok("user:ann")
            assert isinstance(await ann.next_frame(), Expiring)
            await ann.send(Refresh(50, TOKENS.mint("ann", ttl=600)))
            reply = await ann.reply_to(50)
            assert reply.ok and reply.topic is None
            assert isinstance(reply.payload, dict)
            assert 598 <= reply.payload["expires_in"] <= 600
            # That the old token's timers are cancelled is shown on the
            # autojump clock (tests/topics/test_topics_auth.py), without a wait.
            await ann.send(Refresh(51, TOKENS.mint("bob", ttl=600)))
            assert (await ann.reply_to(51)).error_code == "forbidden"


async def test_the_service_the_rule_functions_and_history_grants_decide(
    start_hub: StartHub,
) -> None:
    with trio.fail_after(10):
        running = await auth_hub(start_hub)
        vip = TOKENS.mint("vip-ann", ttl=600, topics={"granted:*": ["join"]})
        async with running.client(query=f"token={vip}") as ann:
            await ann.join_ok("vip:lounge")
            await ann.join_ok("granted:a")
            history = await ann.call("granted:a", "$history", {"after": 0})
            assert history == Reply.error(
                history.ref,
                "granted:a",
                "forbidden",
                "the token does not grant 'history' on topic 'granted:a'",
            )
            await ann.join_ok("board:news")
            refused = await ann.call("board:news", "edit")
            assert refused.error_code == "forbidden"
            assert refused.error_message == (
                "calling topic 'board:news' is not allowed for this connection"
            )
        async with running.client(headers=[("x-test-user", "bob")]) as bob:
            refused = await bob.join("vip:lounge")
            assert refused.error_code == "forbidden"
            assert refused.error_message == (
                "the service of topic 'vip:lounge' does not allow this connection to join"
            )
        async with running.client(headers=[("x-test-user", "editor")]) as editor:
            await editor.join_ok("board:news")
            assert (await editor.call("board:news", "edit", "x")).ok
