"""hub.testing's connections are authenticated as WebSocket ones are: tokens, the app's hook."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from hub import EchoService, Hub, HubConfig, Member, Payload, Service, client
from hub.gateway import AuthenticationError, ConnectRequest
from hub.identity import Identity, user_of
from hub.testing import open_test_hub
from hub.tokens import TokenVerifier

SECRET = "a-test-kit-secret-that-is-long-enough-0123456789"
TOKENS = TokenVerifier(SECRET)


class WhoAmI(Service):
    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        return member.user


def by_query(request: ConnectRequest) -> object:
    name = request.query.get("name")
    if name is None:
        raise AuthenticationError("who are you?")
    return name


def app() -> Hub:
    hub = Hub("test kit auth", authenticate=by_query)
    hub.route("who:*", WhoAmI)
    hub.route("echo:*", EchoService)
    return hub


CONFIG = HubConfig.from_settings({"auth": {"secret": SECRET, "refresh_lead_seconds": 60}})


async def test_tokens_and_the_apps_hook_decide_who_connects(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_test_hub(app(), CONFIG) as hub:
            async with hub.connect(token=TOKENS.mint("ann", ttl=600)) as ann:
                assert await (await ann.join("who:1")).call("me") == "ann"
            async with hub.connect(query={"name": "bob"}) as bob:
                assert await (await bob.join("who:1")).call("me") == "bob"
            async with hub.connect(identity="carl") as carl:  # no check at all
                assert user_of("carl") == await (await carl.join("who:1")).call("me")
            with pytest.raises(client.ConnectError) as refused:
                async with hub.connect():
                    pass  # pragma: no cover
            assert refused.value.status == 401 and "who are you?" in str(refused.value)
            with pytest.raises(client.ConnectError) as forged:
                async with hub.connect(token="garbage"):
                    pass  # pragma: no cover
            assert forged.value.status == 401


async def test_a_token_about_to_expire_is_refreshed_in_band(
    autojump_clock: trio.testing.MockClock,
) -> None:
    asked = trio.Event()

    def fresh() -> str:
        asked.set()
        return TOKENS.mint("ann", ttl=900)

    with trio.fail_after(30):
        async with (
            open_test_hub(app(), CONFIG) as hub,
            hub.connect(token=TOKENS.mint("ann", ttl=30), refresh=fresh) as ann,
        ):
            await asked.wait()  # 30 s left is within the 60 s lead: told at once
            await trio.testing.wait_all_tasks_blocked()  # the Refresh is sent...
            await ann.heartbeat()  # ...and answered before this
            *_, connected = hub.runtime.connections()
            identity = connected.session.identity
            assert isinstance(identity, Identity) and identity.user == "ann"
            assert (
                ann.token is not None and TOKENS.verify(ann.token).expires_at == identity.expires_at
            )
