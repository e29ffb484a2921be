"""The messages nodes send each other about topics, and their msgpack form.

A relay (a node that does not run a topic) sends its members' requests to
the topic's owner; the owner answers one member at a time (`ToMember`), says
when the topic has ended (`TopicEnded`), and answers the hub's own calls
(`Ask`/`Answer`). A relay's backend actors subscribe to the topic's presence
(`SubscribeFromNode`, `UnsubscribeFromNode`, `ResendFromNode`), and the
owner sends each subscription what it receives, numbered (`ToSubscriber`;
`hub.cluster.presence`). Broadcasts do not travel here: the owner publishes
them on the topic's channel like any node (`hub.backplane`).

Every message names the node that sent it (where answers go) and its topic.
A member travels as its id (unique in the cluster), its identity, its join's
params and its codec's name; what reaches one member travels already
encoded with that member's codec when the owner had it encoded anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias

import attrs
import msgpack

from hub.identity import Identity, user_of
from hub.presence.state import Entry
from hub.protocol import Payload

__all__ = [
    "Answer",
    "Ask",
    "CallFromNode",
    "JoinFromNode",
    "LeaveFromNode",
    "NodeMessage",
    "PublishFromNode",
    "ResendFromNode",
    "SubscribeFromNode",
    "ToMember",
    "ToSubscriber",
    "TopicEnded",
    "UnsubscribeFromNode",
    "decode",
    "encode",
    "identity_from_wire",
    "identity_to_wire",
    "users_from_wire",
    "users_to_wire",
]


# --- from a relay to the topic's owner -------------------------------------------


@attrs.frozen
class JoinFromNode:
    topic: str
    node: str
    member: str
    identity: Any
    params: Mapping[str, Payload]
    subprotocol: str
    data: Mapping[str, Any]
    ref: int
    offset: int | None
    epoch: str | None


@attrs.frozen
class LeaveFromNode:
    """The member left (`ended`: its connection ended, its presence keeps the grace)."""

    topic: str
    node: str
    member: str
    ended: bool


@attrs.frozen
class PublishFromNode:
    topic: str
    node: str
    member: str
    ref: int
    event: str
    payload: Payload


@attrs.frozen
class CallFromNode:
    topic: str
    node: str
    member: str
    ref: int
    event: str
    payload: Payload
    #: Seconds the client has left (clocks differ between nodes, durations do not).
    timeout: float


@attrs.frozen
class Ask:
    """A call of the hub's to the topic's actor: `request` is ["publish", event, payload, keep]
    or ["presence"]; answered with an `Answer` of the same `ask`."""

    topic: str
    node: str
    ask: int
    request: list[Any]


@attrs.frozen
class SubscribeFromNode:
    """A backend actor of `node` subscribes to the topic's presence; `subscription` is its
    number there (unique on that node), which every `ToSubscriber` for it names."""

    topic: str
    node: str
    subscription: int


@attrs.frozen
class UnsubscribeFromNode:
    topic: str
    node: str
    subscription: int


@attrs.frozen
class ResendFromNode:
    """The subscription could not use what it was sent numbered `after` (one before it was
    lost, or its subscriber's mailbox was full): send it a snapshot with the next change."""

    topic: str
    node: str
    subscription: int
    after: int


# --- from the owner to a relay's node ---------------------------------------------


@attrs.frozen
class ToMember:
    """Something for one member: `item` is one of

    ["joined", ok, payload, code, message], ["reply", ref, ok, payload, wire],
    ["error", ref, code, message, wire], ["push", event, wire, key, volatile],
    ["ended", code, reason].
    """

    topic: str
    node: str
    member: str
    item: list[Any]


@attrs.frozen
class TopicEnded:
    """The topic's actor on the owner has ended: its relays end, their members are told `code`."""

    topic: str
    node: str
    code: str
    reason: str


@attrs.frozen
class ToSubscriber:
    """What a subscription to the topic's presence receives, numbered by `seq` from 0: `item`
    is one of

    ["snapshot", users] (seq 0: the answer to the subscribe), ["changed", joins, leaves],
    ["refused", kind, message] (seq 0: instead of a snapshot; `kind` names the error),

    with users, joins and leaves as `users_to_wire` makes them.
    """

    topic: str
    node: str
    subscription: int
    seq: int
    item: list[Any]


@attrs.frozen
class Answer:
    """The answer to an `Ask`: its value, or when not `ok`, [kind, message] of the error."""

    topic: str
    node: str
    ask: int
    ok: bool
    value: Any


NodeMessage: TypeAlias = (
    JoinFromNode
    | LeaveFromNode
    | PublishFromNode
    | CallFromNode
    | Ask
    | ToMember
    | TopicEnded
    | Answer
    | SubscribeFromNode
    | UnsubscribeFromNode
    | ResendFromNode
    | ToSubscriber
)

_TAGS: Final[dict[type[Any], int]] = {
    JoinFromNode: 1,
    LeaveFromNode: 2,
    PublishFromNode: 3,
    CallFromNode: 4,
    Ask: 5,
    ToMember: 6,
    TopicEnded: 7,
    Answer: 8,
    SubscribeFromNode: 9,
    UnsubscribeFromNode: 10,
    ResendFromNode: 11,
    ToSubscriber: 12,
}
_TYPES: Final = {tag: kind for kind, tag in _TAGS.items()}


def encode(message: NodeMessage) -> bytes:
    """The message as bytes. Raises ValueError for a payload msgpack cannot carry."""
    fields = attrs.astuple(message, recurse=False)
    try:
        data: bytes = msgpack.packb([_TAGS[type(message)], *fields], use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"a {type(message).__name__} cannot cross nodes: {error}") from error
    return data


# What each field's declared type must be on the wire (checked once, at decode,
# so that what reaches a relay, a topic or a session is of the shape it reads).
_CHECKS: Final[dict[str, Callable[[Any], bool]]] = {
    "str": lambda value: isinstance(value, str),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "bool": lambda value: isinstance(value, bool),
    "float": lambda value: isinstance(value, int | float) and not isinstance(value, bool),
    "int | None": lambda value: (
        value is None or (isinstance(value, int) and not isinstance(value, bool))
    ),
    "str | None": lambda value: value is None or isinstance(value, str),
    "list[Any]": lambda value: isinstance(value, list),
    "Mapping[str, Payload]": lambda value: isinstance(value, dict),
    "Mapping[str, Any]": lambda value: isinstance(value, dict),
}

# The items a `ToMember` carries, by kind: how many fields each has.
_ITEM_LENGTHS: Final = {"joined": 5, "reply": 5, "error": 5, "push": 5, "ended": 3}

# The items a `ToSubscriber` carries, by kind: how many fields each has.
_SUBSCRIBER_ITEM_LENGTHS: Final = {"snapshot": 2, "changed": 3, "refused": 3}


def _check(message: NodeMessage) -> None:
    for field in attrs.fields(type(message)):
        check = _CHECKS.get(str(field.type))
        if check is not None and not check(getattr(message, field.name)):
            raise ValueError(f"{field.name} of a {type(message).__name__} is {field.type}")
    if isinstance(message, ToMember):
        item = message.item
        if not item or _ITEM_LENGTHS.get(item[0]) != len(item):
            raise ValueError(f"an item for a member no node sends: {item!r:.100}")
    if isinstance(message, ToSubscriber):
        item = message.item
        if not item or _SUBSCRIBER_ITEM_LENGTHS.get(item[0]) != len(item):
            raise ValueError(f"an item for a subscriber no node sends: {item!r:.100}")


def decode(data: bytes) -> NodeMessage:
    """The message in `data`. Raises ValueError for bytes no node of this version sends."""
    try:
        tag, *fields = msgpack.unpackb(data, raw=False, strict_map_key=False)
        kind = _TYPES[tag]
        message: NodeMessage = kind(*fields)
        _check(message)
    except Exception as error:  # whatever malformed bytes make msgpack or the class raise
        raise ValueError(f"not a node message: {error!r}") from error
    return message


def identity_to_wire(identity: object) -> Any:
    """A connection's identity as it crosses nodes.

    An `Identity` keeps its user, claims and expiry; a str or None is itself;
    another value of the application's crosses if msgpack carries it, else
    as its user (`user_of`), which is what the hub's own features read.
    """
    if isinstance(identity, Identity):
        return ["identity", identity.user, dict(identity.claims), identity.expires_at]
    if identity is None or isinstance(identity, str):
        return identity
    try:
        msgpack.packb(identity, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return user_of(identity)
    return ["value", identity]


def identity_from_wire(value: Any) -> object:
    match value:
        case ["identity", user, claims, expires_at]:
            return Identity(user, claims, expires_at)
        case ["value", identity]:
            return identity
        case _:
            return value


def users_to_wire(users: Mapping[str, tuple[Entry, ...]]) -> dict[str, list[list[Any]]]:
    """Users and their presence entries as they cross nodes: `{user: [[id, gen, meta], ...]}`."""
    return {
        user: [[entry.id, entry.gen, dict(entry.meta)] for entry in entries]
        for user, entries in users.items()
    }


def users_from_wire(value: Any) -> dict[str, tuple[Entry, ...]]:
    """The users of `users_to_wire`. Raises ValueError for a value of another shape."""
    if not isinstance(value, dict):
        raise ValueError(f"presence users must be a map, got {value!r:.100}")
    users = {}
    for user, entries in value.items():
        match user, entries:
            case str(), list():
                pass
            case _:
                raise ValueError(f"presence users must map names to entries: {user!r:.100}")
        converted = []
        for entry in entries:
            match entry:
                case [str(entry_id), int(gen), dict(meta)] if not isinstance(gen, bool):
                    converted.append(Entry(entry_id, gen, meta))
                case _:
                    raise ValueError(f"a presence entry is [id, gen, meta], got {entry!r:.100}")
        users[user] = tuple(converted)
    return users
