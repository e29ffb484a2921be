"""The messages between nodes: each survives its msgpack form; bad bytes are refused clearly."""

from __future__ import annotations

import msgpack
import pytest

from hub.cluster.wire import (
    Answer,
    Ask,
    CallFromNode,
    JoinFromNode,
    LeaveFromNode,
    PublishFromNode,
    ToMember,
    TopicEnded,
    decode,
    encode,
    identity_from_wire,
    identity_to_wire,
)
from hub.identity import Identity

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
    ],
)
def test_messages_of_the_wrong_shape_are_refused_at_decode(fields: list[object]) -> None:
    # Checked once, here: what reaches a relay or a topic is of the shape it reads.
    with pytest.raises(ValueError, match="not a node message"):
        decode(msgpack.packb(fields))
