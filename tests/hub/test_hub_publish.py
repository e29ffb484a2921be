"""Publishing from outside the hub through Redis: `hub.publisher`, `hub publish`, `hub notify`.

Hub nodes in this process on a real Valkey, real clients; the commands run
in a thread (`hub.cli.main`, as the `hub` script runs them). Across two
nodes the events are not kept: until one node owns each topic, both nodes
run the topic's actor, and kept events need one owner to give out offsets
(docs/deployment.md); kept events are tested on one node.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
import trio
from running_hub import StartHub
from valkey_support import ValkeyServer, wait_for_nodes

from hub.app import Hub
from hub.backplane.redis import RedisBackplane
from hub.cli import main
from hub.client import connect
from hub.gateway import ConnectRequest
from hub.publisher import NoNodeServesError, PublishFailedError, open_publisher
from hub.services import RoomService


def user_from_query(request: ConnectRequest) -> str | None:
    return request.query.get("user")


def app() -> Hub:
    hub = Hub("publish", authenticate=user_from_query)
    hub.route("room:*", RoomService)
    return hub


Run = Callable[..., Awaitable[tuple[int, str, str]]]


@pytest.fixture
def run_hub(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """Run `hub ARGS...` in a thread: its exit status, stdout and stderr."""
    for name in list(os.environ):
        if name.startswith("TRIOHUB_"):
            monkeypatch.delenv(name)

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        status = await trio.to_thread.run_sync(main, list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


async def test_a_publisher_reaches_members_on_both_nodes_exactly_once(
    start_hub: StartHub, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    redis = {"redis_url": valkey_server.url}
    one = await start_hub(app(), backplane=redis)
    two = await start_hub(app(), backplane=redis)
    plane = one.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    with trio.fail_after(30):
        async with (
            connect(one.runtime.websocket_url, query={"user": "ann"}) as ann,
            connect(two.runtime.websocket_url, query={"user": "bob"}) as bob,
        ):
            ann_room = aiter(await ann.join("room:news"))
            bob_room = aiter(await bob.join("room:news"))
            await wait_for_nodes(plane, "room:news", 2)
            async with open_publisher(valkey_server.url) as publisher:
                for n in range(5):
                    assert await publisher.publish("room:news", "flash", n, keep=False) is None
                with pytest.raises(NoNodeServesError, match="no node serves topic 'room:empty'"):
                    await publisher.publish("room:empty", "flash", 1, keep=False)
                with pytest.raises(PublishFailedError, match="'\\$' are the hub's"):
                    await publisher.publish("room:news", "$hack", 1)
                await publisher.publish("room:news", "end", None, keep=False)
            for room in (ann_room, bob_room):
                got = [await anext(room) for _ in range(6)]
                assert [(e.event, e.payload, e.offset) for e in got] == [
                    *(("flash", n, None) for n in range(5)),
                    ("end", None, None),
                ]


async def test_hub_publish_and_hub_notify_through_redis(
    start_hub: StartHub, valkey_server: ValkeyServer, run_hub: Run
) -> None:
    valkey_server.flush()
    running = await start_hub(app(), backplane={"redis_url": valkey_server.url})
    url = valkey_server.url
    with trio.fail_after(30):
        async with connect(running.runtime.websocket_url, query={"user": "ada"}) as ada:
            room = aiter(await ada.join("room:lobby"))
            status, out, err = await run_hub(
                "publish", "room:lobby", "news", '{"a": 1}', "--redis", url
            )
            assert status == 0, err
            event = await anext(room)
            assert (event.event, event.payload) == ("news", {"a": 1})
            assert f"offset {event.offset}" in out

            status, _out, err = await run_hub("publish", "room:nobody", "news", "1", "--redis", url)
            assert status == 1
            assert "no node serves topic 'room:nobody'" in err
            assert "nothing delivered" in err

            inbox = aiter(await ada.inbox("ada"))
            status, out, err = await run_hub(
                "notify", "ada", "invite", '{"room": "chess:7"}', "--redis", url
            )
            assert status == 0, err
            assert "through Redis" in out
            notification = await anext(inbox)
            assert (notification.event, notification.payload) == ("invite", {"room": "chess:7"})
            kept = await running.runtime.notifications.inbox.pending("ada")
            assert [n.offset for n in kept] == [notification.offset]

            status, _out, err = await run_hub("publish", "room:lobby", "news", "{", "--redis", url)
            assert (status, "is not valid JSON" in err) == (2, True)
