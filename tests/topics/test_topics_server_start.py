"""Topics the server starts (`start_topic`, `topic.init`) and the crash code a service chooses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import pytest
import trio
import trio.testing
from memory_support import connect_memory, read_frames

from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig, ServerConfig
from hub.errors import TopicExistsError, UnknownTopicError
from hub.protocol import JSON, Ended, Join, Payload, Publish, Reply
from hub.services import Service
from hub.topics import Member


class Made(Service):
    """Answers a join with what the server started it with; `boom` is a bug."""

    crash_code = "made_crashed"
    crash_reason = "it is over"

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        return {"init": self.topic.init}

    async def handle_event(self, member: Member, event: str, payload: Payload) -> None:
        raise RuntimeError("a bug")


@pytest.fixture
async def runtime(nursery: trio.Nursery) -> AsyncIterator[HubRuntime]:
    app = Hub("server start")
    app.route("made:*", Made)
    yield await nursery.start(serve_hub, app, HubConfig(server=ServerConfig(port=0)))


async def test_a_topic_the_server_starts_has_its_init_and_cannot_be_started_twice(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        await runtime.start_topic("made:1", {"players": ["ada"]})
        assert runtime.topics.whereis("made:1") is not None
        with pytest.raises(TopicExistsError, match="made:1"):
            await runtime.start_topic("made:1", {"players": ["bob"]})
        with pytest.raises(UnknownTopicError):
            await runtime.start_topic("nothing:1")
        client, _done = await connect_memory(runtime, nursery)
        client.send(JSON.encode(Join(1, "made:1", {})))
        [reply] = await read_frames(client, 1)
        assert isinstance(reply, Reply) and reply.payload["init"] == {"players": ["ada"]}
        # A topic a join starts has no init.
        client.send(JSON.encode(Join(2, "made:2", {})))
        [reply] = await read_frames(client, 1)
        assert isinstance(reply, Reply) and reply.payload["init"] is None


async def test_a_crashed_topic_ends_its_members_with_its_services_crash_code(
    runtime: HubRuntime, nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        client, _done = await connect_memory(runtime, nursery)
        client.send(JSON.encode(Join(1, "made:3", {})))
        await read_frames(client, 1)
        client.send(JSON.encode(Publish(0, "made:3", "boom")))
        [ended] = await read_frames(client, 1)
        await trio.testing.wait_all_tasks_blocked()  # the crash is logged
    assert isinstance(ended, Ended) and (ended.code, ended.reason) == ("made_crashed", "it is over")
