"""Players of the lobby example over memory transports, for tests on the autojump clock.

runtime = await nursery.start(serve_hub, make_app(), config())
ada = await Player.connect(runtime, nursery, "ada")
reply = await ada.join("queue:4p", {"rating": 1500})
found = await ada.next_push("queue:4p", "match_found")
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio
import trio.testing
from memory_support import connect_memory

from hub.app import HubRuntime
from hub.config import HubConfig, ServerConfig, TopicsConfig, WebSocketConfig
from hub.protocol import JSON, Ended, Frame, Join, Leave, Payload, Publish, Push, Reply
from hub.transport import MemoryClient

# The tests import the example from the project's root (`examples.lobby`).
# Not in a conftest.py: a second module named `conftest` on sys.path would
# shadow the one other suites import helpers from.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


def config(*, write_timeout: float = 10.0, **topics: Any) -> HubConfig:
    return HubConfig(
        server=ServerConfig(port=0),
        websocket=WebSocketConfig(write_timeout=write_timeout),
        topics=TopicsConfig(**topics),
    )


class Player:
    """One player's connection: frames it read but no test asked for yet are kept, in order."""

    def __init__(self, name: str, client: MemoryClient, done: trio.Event) -> None:
        self.name = name
        self.client = client
        self.done = done
        self.unread: list[Frame] = []
        self._refs = itertools.count(1)

    @classmethod
    async def connect(
        cls, runtime: HubRuntime, nursery: trio.Nursery, name: str, *, buffer: int = 64
    ) -> Player:
        client, done = await connect_memory(runtime, nursery, buffer=buffer, identity=name)
        return cls(name, client, done)

    def send(self, frame: Frame) -> None:
        self.client.send(JSON.encode(frame))

    async def read(self) -> None:
        """Read one message from the hub into `unread`."""
        self.unread.extend(JSON.decode_strict(await self.client.receive()))

    async def next(self, wanted: Callable[[Frame], bool]) -> Frame:
        """The first frame (read already, or read now) that `wanted` accepts; it is taken."""
        index = 0
        while True:
            while index < len(self.unread):
                if wanted(self.unread[index]):
                    return self.unread.pop(index)
                index += 1
            await self.read()

    async def reply(self, ref: int) -> Reply:
        frame = await self.next(lambda frame: isinstance(frame, Reply) and frame.ref == ref)
        assert isinstance(frame, Reply)
        return frame

    async def join(
        self,
        topic: str,
        params: Mapping[str, Payload] | None = None,
        *,
        offset: int | None = None,
        epoch: str | None = None,
    ) -> Reply:
        ref = next(self._refs)
        self.send(Join(ref, topic, dict(params or {}), offset, epoch))
        return await self.reply(ref)

    def last_offset(self, topic: str) -> int | None:
        """The highest offset of the Pushes on `topic` read so far."""
        offsets = [
            frame.offset
            for frame in self.unread
            if isinstance(frame, Push) and frame.topic == topic and frame.offset is not None
        ]
        return max(offsets, default=None)

    async def leave(self, topic: str) -> Reply:
        ref = next(self._refs)
        self.send(Leave(ref, topic))
        return await self.reply(ref)

    async def publish(self, topic: str, event: str, payload: Payload = None) -> Reply:
        """Publish with an ack; the Reply (ok or error) is returned."""
        ref = next(self._refs)
        self.send(Publish(ref, topic, event, payload))
        return await self.reply(ref)

    def publish_nowait(self, topic: str, event: str, payload: Payload = None) -> None:
        self.send(Publish(0, topic, event, payload))

    async def next_push(self, topic: str, event: str) -> Any:
        """The payload of the next `event` Push on `topic`."""
        frame = await self.next(
            lambda frame: isinstance(frame, Push) and frame.topic == topic and frame.event == event
        )
        assert isinstance(frame, Push)
        return frame.payload

    async def ended(self, topic: str) -> Ended:
        frame = await self.next(lambda frame: isinstance(frame, Ended) and frame.topic == topic)
        assert isinstance(frame, Ended)
        return frame

    def pushes(self, topic: str, event: str) -> list[Any]:
        """Take every `event` Push on `topic` read so far."""
        taken = [
            frame
            for frame in self.unread
            if isinstance(frame, Push) and frame.topic == topic and frame.event == event
        ]
        self.unread = [frame for frame in self.unread if frame not in taken]
        return [frame.payload for frame in taken if isinstance(frame, Push)]

    async def wait(self, seconds: float) -> None:
        """Let `seconds` pass while reading what comes (a player that keeps up)."""
        deadline = trio.current_time() + seconds
        while trio.current_time() < deadline:
            await trio.sleep(min(0.25, deadline - trio.current_time()))
            self.drain_nowait()

    async def latest(self, topic: str, event: str = "state") -> Any:
        """The newest `event` Push on `topic` the hub has sent by now (older ones are taken)."""
        await trio.testing.wait_all_tasks_blocked()
        self.drain_nowait()
        pushes = self.pushes(topic, event)
        return pushes[-1] if pushes else await self.next_push(topic, event)

    def drain_nowait(self) -> None:
        """Read what the hub has sent so far, without waiting."""
        while (message := self.client.receive_nowait()) is not None:
            self.unread.extend(JSON.decode_strict(message))
