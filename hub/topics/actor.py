"""The topic actor: membership, and its service's handlers, one message at a time."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

import actors
from hub.errors import EncodeError, ErrorCode, JoinRefusedError, ServiceError
from hub.protocol import Error, Reply
from hub.topics.crashes import CrashLedger
from hub.topics.messages import (
    CallService,
    JoinAnswered,
    JoinTopic,
    LeaveTopic,
    Member,
    PublishEvent,
    SendFrame,
)
from hub.topics.routes import Route
from hub.topics.topic import Topic

if TYPE_CHECKING:
    from hub.metrics import HubMetrics
    from hub.services import Service

logger = logging.getLogger(__name__)

# Requests queued for one topic actor. A session's request to a full topic is
# answered `overloaded` at once: the sender is told, nobody waits.
TOPIC_MAILBOX_CAPACITY: Final = 4096

# A topic actor whose last member left waits this long for a member before
# it stops, so that a client reloading a page finds its topic, and its
# history, still there.
EMPTY_TOPIC_GRACE_SECONDS: Final = 10.0


@attrs.frozen
class _CheckEmpty:
    """The empty-topic grace period is over: stop unless someone joined."""


def topic_name_key(name: str) -> Hashable:
    """The registry key of the topic actor for `name`."""
    return ("topic", name)


class TopicActor(actors.Actor):
    """The actor behind one topic: membership, and its service's handlers."""

    mailbox_capacity = TOPIC_MAILBOX_CAPACITY

    def __init__(
        self,
        name: str,
        route: Route,
        metrics: HubMetrics | None = None,
        *,
        crashes: CrashLedger | None = None,
        empty_grace: float = EMPTY_TOPIC_GRACE_SECONDS,
    ) -> None:
        self.topic = Topic(name, metrics)
        self._crashes = crashes or CrashLedger()
        self._route = route
        self._empty_grace = empty_grace
        self._monitors: dict[actors.ActorRef, actors.Monitor] = {}
        self._nursery: trio.Nursery | None = None
        self._empty_since = 0.0
        self._empty_timer_running = False
        self.service: Service | None = None

    async def run(self) -> None:
        self.ctx.register(topic_name_key(self.topic.name))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._became_empty()
            await super().run()
            nursery.cancel_scope.cancel()

    async def started(self) -> None:
        self.service = self._route.factory(self.topic)
        await self.service.started()

    async def stopped(self, reason: actors.ExitReason) -> None:
        if isinstance(reason, actors.Crashed):
            self._crashes.record(self.topic.name, trio.current_time())
        if self.service is not None:
            await self.service.stopped()

    def _became_empty(self) -> None:
        """Start the grace period: stop unless a member joins before it ends."""
        self._empty_since = trio.current_time()
        self._arm_empty_timer()

    def _arm_empty_timer(self) -> None:
        # One timer task at most, however often the topic empties: it
        # follows `_empty_since` as that moves.
        if not self._empty_timer_running:
            assert self._nursery is not None
            self._empty_timer_running = True
            self._nursery.start_soon(self._expire_when_empty)

    async def _expire_when_empty(self) -> None:
        try:
            while True:
                await trio.sleep_until(self._empty_since + self._empty_grace)
                if self.topic.members:
                    return  # someone joined; the next emptiness arms a new timer
                if trio.current_time() < self._empty_since + self._empty_grace:
                    continue  # emptied again meanwhile: wait the rest of the new period
                if self.ref.cast(_CheckEmpty()):
                    return
                # The mailbox is full of requests: the topic is busy, look again later.
                await trio.sleep(self._empty_grace)
        finally:
            self._empty_timer_running = False

    async def handle(self, message: Any) -> None:
        await self._handle(message)
        while self.topic._kicked:
            member = self.topic._kicked.pop()
            await self._remove(member.connection.ref, already_removed=member)

    async def _handle(self, message: Any) -> None:
        assert self.service is not None
        topic = self.topic
        match message:
            case PublishEvent(connection=connection, ref=ref, event=event, payload=payload):
                member = topic.members.get(connection)
                if member is None:
                    return  # left (or was kicked) while this was queued
                try:
                    await self.service.handle_event(member, event, payload)
                except ServiceError as error:
                    _answer_error(member, ref, topic.name, error.code, error.message)
                else:
                    if ref:
                        member.connection.deliver(SendFrame(Reply(ref, topic.name, True)))
            case CallService(connection=connection):
                await self._call(message)
            case JoinTopic():
                await self._join(message)
            case LeaveTopic(connection=connection):
                await self._remove(connection)
            case actors.Down(ref=connection):
                # The connection is gone, whichever of its monitors says so.
                await self._remove(connection)
            case _CheckEmpty():
                if topic.members:
                    return
                if trio.current_time() - self._empty_since >= self._empty_grace:
                    self.ctx.stop()
                else:
                    self._arm_empty_timer()
            case _:
                raise actors.UnexpectedMessageError(self.ctx.name, message)

    async def _join(self, request: JoinTopic) -> None:
        assert self.service is not None
        member = request.member
        connection = member.connection
        name = self.topic.name
        try:
            payload = await self.service.join(member, dict(member.params))
        except (JoinRefusedError, ServiceError) as error:
            connection.deliver(
                JoinAnswered(name, self.ref, False, code=error.code, message=error.message)
            )
            return
        self.topic._add(member)
        self._monitors[connection.ref] = self.ctx.monitor(connection.ref)
        connection.deliver(JoinAnswered(name, self.ref, True, payload))
        await self.service.joined(member, request.offset)

    async def _remove(
        self, connection: actors.ActorRef, *, already_removed: Member | None = None
    ) -> None:
        assert self.service is not None
        member = self.topic._remove(connection) or already_removed
        monitor = self._monitors.pop(connection, None)
        if monitor is not None:
            # No flush: a Down already queued is harmless (see `_handle`), and
            # flushing would rebuild the mailbox on every leave.
            self.ctx.demonitor(monitor)
        if member is not None:
            await self.service.leave(member)
            if not self.topic.members:
                self._became_empty()

    async def _call(self, request: CallService) -> None:
        assert self.service is not None
        member = self.topic.members.get(request.connection)
        if member is None:
            return
        name = self.topic.name
        if request.deadline <= trio.current_time():
            _answer_error(member, request.ref, name, ErrorCode.CALL_TIMEOUT, "call timed out")
            return
        with trio.move_on_at(request.deadline):
            try:
                result = await self.service.handle_call(member, request.event, request.payload)
            except ServiceError as error:
                _answer_error(member, request.ref, name, error.code, error.message)
                return
            try:
                reply = Reply(request.ref, name, True, result)
                member.connection.codec.encode(reply)
            except (EncodeError, ValueError) as error:
                # Something this client's codec cannot carry (bytes for a JSON
                # client, say): told to the client, not a crash of the topic.
                subprotocol = member.connection.codec.subprotocol
                message = f"the service's answer cannot be sent over {subprotocol}: {error}"
                _answer_error(member, request.ref, name, ErrorCode.SERVICE_ERROR, message)
                return
            member.connection.deliver(SendFrame(reply))
            return
        _answer_error(
            member,
            request.ref,
            name,
            ErrorCode.CALL_TIMEOUT,
            f"the service of {name!r} did not answer in time",
        )


def _answer_error(member: Member, ref: int, topic: str, code: str, message: str) -> None:
    """Tell the client its request failed: an error Reply, or an Error frame for ref 0."""
    frame: Reply | Error = (
        Reply.error(ref, topic, code, message) if ref else Error(None, code, message)
    )
    member.connection.deliver(SendFrame(frame))
