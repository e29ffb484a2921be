"""hub.client's inbox: notifications on a personal topic, and their acknowledgement."""

from __future__ import annotations

import pytest
import trio

from hub import Hub, HubConfig, ServerConfig, client, serve_hub
from hub.app import HubRuntime
from hub.gateway import ConnectRequest
from hub.protocol import SUBPROTOCOL_JSON

pytestmark = pytest.mark.timeout(30)


def user_from_query(request: ConnectRequest) -> str | None:
    return request.query.get("user")


async def test_a_client_gets_what_waited_acks_it_and_another_device_is_told(
    nursery: trio.Nursery,
) -> None:
    app = Hub("inbox", authenticate=user_from_query)
    runtime: HubRuntime = await nursery.start(
        serve_hub, app, HubConfig(server=ServerConfig(port=0))
    )
    url = runtime.websocket_url
    waited = await runtime.notify("ada", "invite", {"room": "chess:7"})
    with trio.fail_after(20):
        async with (
            client.connect(url, query={"user": "ada"}) as phone,
            client.connect(url, query={"user": "ada"}, subprotocol=SUBPROTOCOL_JSON) as laptop,
        ):
            inbox = await phone.inbox("ada")
            assert isinstance(inbox.join_reply, dict) and inbox.join_reply["unread"] == 1
            # Pushes before the first iteration are held: the one that waited is first.
            held = aiter(inbox)
            first = await anext(held)
            assert (first.event, first.payload, first.offset) == (
                "invite",
                {"room": "chess:7"},
                waited.offset,
            )
            other = await laptop.inbox("ada")
            pushes = aiter(other)
            assert (await anext(pushes)).offset == waited.offset
            later = await runtime.notify("ada", "message", {"text": "hi"})
            push = await anext(pushes)
            assert (push.event, push.payload, push.offset) == (
                "message",
                {"text": "hi"},
                later.offset,
            )
            status = await phone.ack("ada", later.offset)
            assert isinstance(status, dict) and status["unread"] == 0
            told = await anext(pushes)
            assert told.event == "$unread" and told.payload["acked"] == later.offset
            with pytest.raises(client.ReplyError) as refused:
                await phone.inbox("eve")
            assert refused.value.code == "forbidden"
