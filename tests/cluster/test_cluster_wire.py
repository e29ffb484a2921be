"""The messages between nodes: each survives its msgpack form; bad bytes are refused clearly."""

from __future__ import annotations

import msgpack
import pytest

from hub.cluster import TopicElsewhereError
from hub.cluster.presence import error_from_wire, error_to_wire, presence_from_owner
from hub.cluster.wire import (
    Answer,
    Ask,
    CallFromNode,
    JoinFromNode,
    LeaveFromNode,
    PublishFromNode,
    ResendFromNode,
    SubscribeFromNode,
    ToMember,
    TopicEnded,
    ToSubscriber,
    UnsubscribeFromNode,
    decode,
    encode,
    identity_from_wire,
    identity_to_wire,
    users_from_wire,
    users_to_wire,
)
from hub.identity import Identity
from hub.presence import Diff, Entry, PresenceChanged, PresenceLimitError, PresenceSnapshot
from hub.topics import TopicWithoutPresenceError

MESSAGES = [
    JoinFromNode(
        "room:a", "n1", "c1@n1", "ann", {"user": "ann"}, "triohub.v1.json", {}, 3, 7, "ep"
    ),
    LeaveFromNode("room:a", "n1", "c1@n1", True),
    PublishFromNode("room:a", "n1", "c1@n1", 0, "message", {"text": "hi", "raw": b"\x00"}),
    CallFromNode("room:a", "n1", "c1@n1", 4, "add", 2, 4.5),
    Ask("room:a", "n1", 9, ["publish", "news", None, True]),
    ToMember("room:a", "n2", "c1@n1", ["push", "e", b"wire", None, False]),
    TopicEnded("room:a", "n2", "topic_crashed", "join again"),
    Answer("room:a", "n2", 9, True, 12),
    SubscribeFromNode("room:a", "n1", 3),
    UnsubscribeFromNode("room:a", "n1", 3),
    ResendFromNode("room:a", "n1", 3, 7),
    ToSubscriber("room:a", "n2", 3, 0, ["snapshot", {"ann": [["e1", 2, {"s": 1}]]}]),
    ToSubscriber("room:a", "n2", 3, 4, ["changed", {}, {"ann": [["e1", 2, {}]]}]),
    ToSubscriber("room:a", "n2", 3, 0, ["refused", "limit", "too many"]),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda message: type(message).__name__)
def test_every_message_survives_its_wire_form(message: object) -> None:
    assert decode(encode(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", msgpack.packb([99, "x"]), msgpack.packb([1, "too", "few"]), msgpack.packb(5)],
)
def test_bytes_no_node_sends_are_refused_with_a_clear_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a node message"):
        decode(data)


def test_a_payload_msgpack_cannot_carry_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="cannot cross nodes"):
        encode(PublishFromNode("room:a", "n1", "c1", 0, "e", {"n": 2**70}))


def test_identities_cross_as_what_the_hub_reads_of_them() -> None:
    identity = Identity("ann", {"role": "admin"}, 123.0)
    assert identity_from_wire(identity_to_wire(identity)) == identity
    assert identity_from_wire(identity_to_wire("bob")) == "bob"
    assert identity_from_wire(identity_to_wire(None)) is None
    assert identity_from_wire(identity_to_wire({"user": "x"})) == {"user": "x"}
    # An object of the application's that msgpack cannot carry: anonymous.
    assert identity_from_wire(identity_to_wire(object())) is None


@pytest.mark.parametrize(
    "fields",
    [
        [6, "room:a", "n2", "c1@n1", ["bogus"]],  # an item no owner sends
        [6, "room:a", "n2", "c1@n1", ["push", "e", b"wire"]],  # an item cut short
        [6, "room:a", "n2", "c1@n1", "push"],  # not a list
        [2, 5, "n1", "c1@n1", True],  # a topic that is not a name
        [4, "room:a", "n1", "c1@n1", "4", "add", 2, 4.5],  # a ref that is not a number
        [8, "room:a", "n2", 9, "yes", 12],  # ok that is not a bool
        [12, "room:a", "n2", 3, 0, ["changed", {}]],  # a change cut short
        [12, "room:a", "n2", 3, "0", ["snapshot", {}]],  # a number that is not one
        [11, "room:a", "n1", 3, None],  # a resend after nothing
    ],
)
def test_messages_of_the_wrong_shape_are_refused_at_decode(fields: list[object]) -> None:
    # Checked once, here: what reaches a relay or a topic is of the shape it reads.
    with pytest.raises(ValueError, match="not a node message"):
        decode(msgpack.packb(fields))


def test_presence_crosses_nodes_as_entries_and_comes_back_the_same() -> None:
    users = {"ann": (Entry("e1", 2, {"s": 1}), Entry("e4", 5, {})), "bob": (Entry("e2", 3, {}),)}
    assert users_from_wire(users_to_wire(users)) == users
    snapshot = ToSubscriber("room:a", "n2", 3, 0, ["snapshot", users_to_wire(users)])
    taken = presence_from_owner(decode(encode(snapshot)))  # type: ignore[arg-type]
    assert (taken.subscription, taken.seq) == (3, 0)
    assert taken.value == PresenceSnapshot("room:a", users)
    wire = users_to_wire({"bob": users["bob"]})
    changed = presence_from_owner(ToSubscriber("room:a", "n2", 3, 1, ["changed", {}, wire]))
    assert changed.value == PresenceChanged("room:a", Diff({}, {"bob": users["bob"]}))


@pytest.mark.parametrize(
    "users",
    [
        [],  # not a map
        {"ann": "e1"},  # entries that are not a list
        {"ann": [["e1", 2]]},  # an entry cut short
        {"ann": [["e1", True, {}]]},  # a generation that is not a number
        {"ann": [["e1", 2, []]]},  # meta that is not a map
        {3: [["e1", 2, {}]]},  # a user that is not a name
    ],
)
def test_presence_of_the_wrong_shape_is_refused_before_a_relay_sees_it(users: object) -> None:
    with pytest.raises(ValueError, match="presence"):
        users_from_wire(users)
    with pytest.raises(ValueError, match="presence"):
        presence_from_owner(ToSubscriber("room:a", "n2", 3, 0, ["snapshot", users]))


def test_errors_a_caller_may_catch_cross_nodes_as_their_own_class() -> None:
    for error in (PresenceLimitError("full"), TopicWithoutPresenceError("none")):
        answer = decode(encode(Answer("t", "n", 1, False, error_to_wire(error))))
        assert isinstance(answer, Answer)
        crossed = error_from_wire(answer.value)
        assert type(crossed) is type(error) and str(crossed) == str(error)
    other = error_from_wire(error_to_wire(ValueError("odd")))
    assert isinstance(other, TopicElsewhereError) and str(other) == "odd"
    assert isinstance(error_from_wire("from an older node"), TopicElsewhereError)
