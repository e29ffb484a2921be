"""Publishing from outside the hub through Redis: `hub.publisher`, `hub publish`, `hub notify`.

Hub nodes in this process on a real Valkey, real clients; the commands run
in a thread (`hub.cli.main`, as the `hub` script runs them). Across two
nodes the events are not kept: until one node owns each topic, both nodes
run the topic's actor, and kept events need one owner to give out offsets
(docs/deployment.md); kept events are tested on one node.
"""

from __future__ import annotations

import logging
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
from hub.publish_requests import REFUSAL_LOG_SECONDS, _RefusalLog
from hub.publisher import (
    NoNodeServesError,
    PublishFailedError,
    PublishRequest,
    open_publisher,
)
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


async def test_a_node_answers_a_publish_request_only_on_a_publishers_reply_topic(
    start_hub: StartHub, valkey_server: ValkeyServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Anyone who can write to Redis can send a publish request, and its
    # reply_to names the topic the node publishes its answer in. A forged one
    # naming a topic of the hub's would have the node push its answer to that
    # topic's members: it is refused whole (logged once, counted), and a
    # publisher's own request is still answered.
    valkey_server.flush()
    running = await start_hub(app(), backplane={"redis_url": valkey_server.url})
    plane = running.runtime.backplane
    assert isinstance(plane, RedisBackplane)
    with trio.fail_after(30):
        async with connect(running.runtime.websocket_url, query={"user": "ada"}) as ada:
            lobby = aiter(await ada.join("room:lobby"))
            victim = aiter(await ada.join("room:victim"))
            async with open_publisher(valkey_server.url) as publisher:
                for n in range(3):
                    forged = PublishRequest(f"forged{n}", "news", n, False, "room:victim")
                    assert await publisher.backplane.request("room:lobby", forged.encode()) == 1
                offset = await publisher.publish("room:lobby", "news", "real")
                await publisher.publish("room:victim", "last", None, keep=False)
            event = await anext(lobby)
            assert (event.event, event.payload, event.offset) == ("news", "real", offset)
            event = await anext(victim)
            assert (event.event, event.payload) == ("last", None)  # no answer before it
    refusals = [
        record.getMessage()
        for record in caplog.records
        if record.name == "hub.publish_requests" and record.levelno == logging.WARNING
    ]
    assert len(refusals) == 1, refusals  # the first; the next two within the interval
    assert "'room:victim' is not a publisher's reply topic" in refusals[0]
    assert plane.stats().refused_messages == 3


def test_a_publish_request_names_a_publishers_reply_topic() -> None:
    good = PublishRequest("id", "news", None, True, "$publisher 0123456789abcdef")
    assert PublishRequest.decode(good.encode()) == good
    for reply_to in (
        "room:lobby",
        "$notifications",
        "$publisher ",
        "$publisher 0123456789abcdef0",
        "$publisher 0123456789ABCDEF",
        "$publisher room:lobby",
    ):
        forged = PublishRequest("id", "news", None, True, reply_to)
        with pytest.raises(ValueError, match="is not a publisher's reply topic"):
            PublishRequest.decode(forged.encode())


async def test_refused_publish_requests_are_logged_once_then_summed_up(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = _RefusalLog()
    for _ in range(3):
        log.refused("room:a", "not a publish request")
    await trio.sleep(REFUSAL_LOG_SECONDS)
    log.refused("room:a", "not a publish request")
    assert [record.getMessage() for record in caplog.records] == [
        "refused a publish request on topic 'room:a': not a publish request",
        "refused a publish request on topic 'room:a': not a publish request "
        "(2 more refused since the last line, not logged)",
    ]
