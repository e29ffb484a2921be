"""hub.client with signed tokens, against a real hub on 127.0.0.1: sent, refreshed, refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from hub import EchoService, Hub, HubConfig, client, serve_hub
from hub.app import HubRuntime
from hub.identity import Identity
from hub.permissions import PERSONAL
from hub.tokens import TokenVerifier

pytestmark = pytest.mark.timeout(30)

SECRET = "a-client-test-secret-long-enough-0123456789"
TOKENS = TokenVerifier(SECRET)


@pytest.fixture
async def running(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = Hub("client tokens")
    app.route("user:*", EchoService, permissions=PERSONAL)
    config = HubConfig.from_settings(
        {
            "server": {"port": 0},
            "auth": {"secret": SECRET, "leeway_seconds": 0, "refresh_lead_seconds": 60},
        }
    )
    runtime: HubRuntime = await nursery.start(serve_hub, app, config)
    yield runtime


async def test_a_token_is_sent_and_refreshed_when_the_hub_says_it_expires(
    running: HubRuntime,
) -> None:
    asked = trio.Event()

    async def fresh_token() -> str:
        asked.set()
        return TOKENS.mint("ann", ttl=600)

    with trio.fail_after(10):
        short = TOKENS.mint("ann", ttl=2)
        async with client.connect(
            running.websocket_url, token=short, refresh=fresh_token, heartbeat_seconds=None
        ) as ann:
            inbox = await ann.join("user:ann")
            await asked.wait()  # the hub said Expiring at once (2 s < the 60 s lead)
            # The Refresh is sent once every task waits; a Heartbeat after it
            # is answered after it.
            await trio.testing.wait_all_tasks_blocked()
            await ann.heartbeat()
            [connected] = running.connections()
            identity = connected.session.identity
            assert isinstance(identity, Identity) and identity.expires_at is not None
            assert identity.expires_at > time.time() + 500
            assert await inbox.call("still", "here") == "here"
            left = await ann.refresh(TOKENS.mint("ann", ttl=900))
            assert 898 <= left <= 900
            with pytest.raises(client.ReplyError) as refused:
                await ann.refresh(TOKENS.mint("bob", ttl=900))
            assert refused.value.code == "forbidden"
            with pytest.raises(client.ReplyError) as refused:
                await ann.join("user:bob")
            assert refused.value.code == "forbidden"


async def test_a_bad_token_is_refused_with_the_reason(running: HubRuntime) -> None:
    with trio.fail_after(10), pytest.raises(client.ConnectError) as caught:
        async with client.connect(running.websocket_url, token="garbage"):
            raise AssertionError("connected")
    assert caught.value.status == 401
    assert str(caught.value).endswith("the token is malformed (not a signed JWT)")


async def test_a_connection_closed_for_its_expired_token_comes_back_with_a_fresh_one(
    running: HubRuntime,
) -> None:
    # The first token the source gives is another user's: the hub refuses it
    # in-band, and closes the connection 1008 "token expired" at expiry; the
    # client then asks again, and reconnects with the good one.
    tokens = iter([TOKENS.mint("bob", ttl=600), TOKENS.mint("ann", ttl=600)])
    rejoined = trio.Event()
    with trio.fail_after(15):
        async with client.connect(
            running.websocket_url,
            token=TOKENS.mint("ann", ttl=2),
            refresh=lambda: next(tokens),
            backoff_base=0.05,
            heartbeat_seconds=None,
        ) as ann:
            inbox = await ann.join("user:ann")
            inbox.on_rejoin(lambda reply: rejoined.set())
            await rejoined.wait()
            assert ann.connections == 2 and ann.closed is None
            assert await inbox.call("still", "here") == "here"
            *_, newest = running.connections()  # the expired one may still be closing
            identity = newest.session.identity
            assert isinstance(identity, Identity) and identity.user == "ann"
            assert identity.expires_at is not None and identity.expires_at > time.time() + 500
