"""A hub with the observer on and a backend actor a client can crash: for the observer's tests.

    hub serve tests.browser.observer_app:app

`flaky` (a backend actor, permanent) crashes when a client calls `crash`
on a `poke:*` topic; its supervisor, `services`, restarts it. Rooms are
there to give the observer topics and members to show.
"""

from __future__ import annotations

from typing import Any

import actors
from hub import Hub, Member, Payload, RoomService, Service


class Flaky(actors.Actor):
    """Crashes on `crash`; answers calls with how many messages it has seen."""

    def __init__(self) -> None:
        self.seen = 0

    async def handle(self, message: Any) -> None:
        self.seen += 1
        if message == "crash":
            raise RuntimeError("flaky was told to crash")


class Poke(Service):
    """`crash` calls make the backend actor `flaky` crash."""

    async def handle_call(self, member: Member, event: str, payload: Payload) -> Payload:
        if event == "crash":
            assert self.topic.hub is not None
            self.topic.hub.actor("flaky").cast("crash")
            return "sent"
        return await super().handle_call(member, event, payload)


app = Hub("observer test", observer=True)
app.actor("flaky", Flaky)
app.route("poke:*", Poke)
app.route("room:*", RoomService)
