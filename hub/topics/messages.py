"""The messages between sessions and topic actors, and a member as a service sees it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs

import actors
from hub.backplane import Record
from hub.errors import EncodeError
from hub.identity import user_of
from hub.protocol import Codec, Error, Payload, Push, Reply
from hub.transport import Wire

if TYPE_CHECKING:
    from hub.metrics import HubMetrics

# How long a Call may wait for its service unless the client asks for less,
# and the most it may ask for.
DEFAULT_CALL_TIMEOUT_SECONDS: Final = 5.0
MAX_CALL_TIMEOUT_SECONDS: Final = 60.0


class Subscriber(Protocol):
    """What a topic needs of a member's connection: a ref, a codec, a mailbox slot."""

    @property
    def ref(self) -> actors.ActorRef: ...

    @property
    def codec(self) -> Codec: ...

    @property
    def data(self) -> dict[str, Any]: ...

    def deliver(self, item: Outbound | ToConnection) -> None:
        """Queue `item` for the client without waiting (slow consumers are evicted)."""


@attrs.frozen(eq=False)
class Member:
    """One connection's membership of one topic, as its service sees it.

    `id` is the connection's id, unique in this hub; `identity` is what the
    hub's authenticate hook returned for the connection (None without one);
    `params` are the join's params as the client sent them. `claimed_user`
    is the user name a join param claimed, set by the topic only where its
    presence allows names from params (`Presence(user_param=...)`) and the
    name is free (see `user`).
    """

    id: str
    identity: object
    params: Mapping[str, Payload]
    connection: Subscriber = attrs.field(repr=False)
    claimed_user: str | None = None

    @property
    def user(self) -> str | None:
        """The user this member speaks for, None if anonymous.

        The identity's user (`hub.identity.user_of`) when the connection
        authenticated as one: then never a join param. Otherwise the name its
        join claimed, where the topic's presence takes names from a join
        param; no live connection of another identity holds it.
        """
        return user_of(self.identity) or self.claimed_user

    @property
    def data(self) -> dict[str, Any]:
        """The connection's data bag, as the application's `on_connect` hook filled it."""
        return self.connection.data


# --- what connections send to topic actors -------------------------------------


@attrs.frozen(eq=False)
class JoinTopic:
    member: Member
    ref: int
    offset: int | None
    epoch: str | None = None


@attrs.frozen(eq=False)
class LeaveTopic:
    connection: actors.ActorRef


@attrs.frozen(eq=False)
class PublishEvent:
    connection: actors.ActorRef
    ref: int
    event: str
    payload: Payload


@attrs.frozen(eq=False)
class CallService:
    connection: actors.ActorRef
    ref: int
    event: str
    payload: Payload
    deadline: float


# --- what topic actors send to connections ------------------------------------


@attrs.frozen(eq=False)
class Outbound:
    """A Push for a topic's members, encoded once per codec in use.

    One Outbound goes to every member of a broadcast: the session takes the
    Wire of its own codec, and every transport of one kind frames that Wire
    once for all (`hub.transport`).
    """

    topic: str
    event: str
    #: None for a codec that cannot carry the payload: those members miss it.
    messages: Mapping[Codec, Wire | None]
    #: A member behind on this topic gets only the newest push per key
    #: (latest-value delivery); None: every push is written, in order.
    key: str | None = None
    #: Dropped for a member with anything waiting to be written (volatile delivery).
    volatile: bool = False


@attrs.frozen(eq=False)
class JoinAnswered:
    topic: str
    topic_ref: actors.ActorRef
    ok: bool
    payload: Payload = None
    code: str = ""
    message: str = ""


@attrs.frozen(eq=False)
class SendFrame:
    """A frame for one client (a Reply or Error).

    `wire` is the frame already encoded with the client's codec, when the
    sender had to encode it anyway (to check it can be sent); else the
    session encodes it.
    """

    frame: Reply | Error
    wire: Wire | None = None


@attrs.frozen(eq=False)
class MembershipEnded:
    topic: str
    code: str
    reason: str


ToConnection = JoinAnswered | SendFrame | MembershipEnded


def call_deadline(
    now: float,
    timeout: float | None,
    *,
    default: float = DEFAULT_CALL_TIMEOUT_SECONDS,
    maximum: float = MAX_CALL_TIMEOUT_SECONDS,
) -> float:
    """When a Call with the client's `timeout` (`default` if None, `maximum` at most) is due."""
    if timeout is None:
        timeout = default
    return now + min(timeout, maximum)


def outbound_for(
    record: Record, codecs: Mapping[Codec, int] | tuple[Codec, ...], metrics: HubMetrics | None
) -> Outbound:
    """Encode `record` as a Push once per codec in `codecs`.

    A codec that cannot carry the payload (bytes for a JSON client) gets None:
    its members miss the event, and the metrics count it.
    """
    push = Push(record.topic, record.event, record.payload, record.offset)
    messages: dict[Codec, Wire | None] = {}
    for codec in codecs:
        try:
            messages[codec] = Wire(codec.encode(push))
        except EncodeError:
            messages[codec] = None
            if metrics is not None:
                metrics.unencodable.inc()
    key = record.key
    if key is None and record.latest_only:
        key = record.event
    return Outbound(record.topic, record.event, messages, key, record.volatile)
