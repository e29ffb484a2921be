"""The `$observer` topic: snapshots of the hub, pushed on a timer to whoever watches."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Final

import actors
from hub.admin import AdminGuard
from hub.backplane import Recovery
from hub.errors import JoinRefusedError
from hub.gateway import Authenticate, ConnectRequest
from hub.observer.snapshot import Snapshotter
from hub.protocol import Payload
from hub.services import Service
from hub.topics import Member, Topic

__all__ = [
    "OBSERVER_TOPIC",
    "OBSERVER_WS_PATH",
    "ObserverIdentity",
    "ObserverService",
    "observer_authenticate",
]

#: The topic the observer's views join.
OBSERVER_TOPIC: Final = "$observer"
#: The WebSocket path (the hub protocol) where the admin token is checked.
OBSERVER_WS_PATH: Final = "/observer/ws"


class ObserverIdentity:
    """The identity of a connection made on OBSERVER_WS_PATH (with the admin token, if any)."""

    def __repr__(self) -> str:
        return "ObserverIdentity()"


_OBSERVER: Final = ObserverIdentity()


def observer_authenticate(app_authenticate: Authenticate | None, guard: AdminGuard) -> Authenticate:
    """The hub's `authenticate` when the observer is on.

    A connect request on OBSERVER_WS_PATH must carry the admin token (when
    there is one) and gets an ObserverIdentity; any other goes to the
    application's own hook, unchanged.
    """

    async def authenticate(request: ConnectRequest) -> object:
        if request.path == OBSERVER_WS_PATH:
            guard.check(request)
            return _OBSERVER
        if app_authenticate is None:
            return None
        identity = app_authenticate(request)
        if inspect.isawaitable(identity):
            identity = await identity
        return identity

    return authenticate


class ObserverService(Service):
    """Pushes a `snapshot` to each member as it joins, then to all every `interval` seconds.

    Only connections made on OBSERVER_WS_PATH may join. The timer runs while
    someone watches; a member that cannot keep up gets the newest snapshot,
    not a backlog (`latest_only`).
    """

    def __init__(self, topic: Topic, snapshots: Snapshotter) -> None:
        super().__init__(topic)
        self.snapshots = snapshots
        self._ticker: actors.Timer | None = None

    async def join(self, member: Member, params: Mapping[str, Payload]) -> Payload:
        if not isinstance(member.identity, ObserverIdentity):
            raise JoinRefusedError(
                f"{OBSERVER_TOPIC} is joined from a connection to {OBSERVER_WS_PATH}",
                code="forbidden",
            )
        return {"interval": self.snapshots.interval}

    async def joined(self, member: Member, recovery: Recovery) -> None:
        self.topic.push(member, "snapshot", self.snapshots.take())
        if self._ticker is None:
            self._ticker = self.topic.every(self.snapshots.interval, "tick")

    async def leave(self, member: Member) -> None:
        if not self.topic.members and self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    async def handle_timer(self, event: str, payload: Payload) -> None:
        self.topic.broadcast("snapshot", self.snapshots.take(), latest_only=True)
