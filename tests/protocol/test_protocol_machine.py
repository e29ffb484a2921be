"""The protocol machines, wired client to server through real bytes."""

import attrs
import pytest

from hub.protocol import (
    JSON,
    MALFORMED_WINDOW_SECONDS,
    MAX_MALFORMED,
    MAX_REF,
    MSGPACK,
    Action,
    Call,
    ClientEvent,
    ClientMachine,
    Close,
    CloseCode,
    Codec,
    DecodeError,
    Dispatch,
    EndCode,
    Ended,
    Error,
    ErrorCode,
    ErrorReceived,
    Heartbeat,
    Join,
    Leave,
    Message,
    NoPendingJoinError,
    Publish,
    Push,
    Reply,
    ReplyReceived,
    Send,
    ServerMachine,
)


@attrs.define
class Wire:
    """A client and a server machine joined by a pretend socket."""

    client: ClientMachine
    server: ServerMachine
    now: float = 0.0

    def to_server(self, message: tuple[int, Message] | Message) -> list[Action]:
        data = message[1] if isinstance(message, tuple) else message
        return self.server.receive(data, self.now)

    def to_client(self, actions: list[Action]) -> list[ClientEvent]:
        """Deliver every Send in `actions` to the client, as the shell would."""
        events: list[ClientEvent] = []
        for action in actions:
            if isinstance(action, Send):
                events += self.client.receive(self.server.codec.encode(action.frame))
        return events

    def join(self, topic: str) -> None:
        ref, data = self.client.join(topic)
        assert self.to_server(data) == [Dispatch(Join(ref, topic))]
        self.to_client(self.server.join_succeeded(topic))


@pytest.fixture(params=[MSGPACK, JSON], ids=lambda codec: codec.subprotocol)
def wire(request: pytest.FixtureRequest) -> Wire:
    codec: Codec = request.param
    return Wire(ClientMachine(codec), ServerMachine(codec))


def test_a_join_carries_the_epoch_and_offset_to_recover_from(wire: Wire) -> None:
    ref, data = wire.client.join("room:1", {}, offset=4, epoch="e1")
    assert wire.to_server(data) == [Dispatch(Join(ref, "room:1", {}, 4, "e1"))]


def test_join_publish_call_leave(wire: Wire) -> None:
    ref, data = wire.client.join("room:1", {"name": "alice"}, offset=4)
    actions = wire.to_server(data)
    assert actions == [Dispatch(Join(ref, "room:1", {"name": "alice"}, 4))]
    assert not wire.server.is_joined("room:1")  # only once the service confirms

    events = wire.to_client(wire.server.join_succeeded("room:1", {"members": 1}))
    assert events == [
        ReplyReceived(
            Join(ref, "room:1", {"name": "alice"}, 4), Reply(ref, "room:1", True, {"members": 1})
        )
    ]
    assert wire.server.joined == {"room:1"}
    assert wire.client.joined == {"room:1"}

    ref, data = wire.client.publish("room:1", "message", {"text": "hi"}, ack=True)
    assert wire.to_server(data) == [Dispatch(Publish(ref, "room:1", "message", {"text": "hi"}))]
    ref, data = wire.client.publish("room:1", "typing")
    assert ref == 0
    assert wire.to_server(data) == [Dispatch(Publish(0, "room:1", "typing"))]

    ref, data = wire.client.call("room:1", "history", {"limit": 5}, timeout=2.0)
    assert wire.to_server(data) == [Dispatch(Call(ref, "room:1", "history", {"limit": 5}, 2.0))]
    # The shell answers a Call with the service's reply.
    events = wire.to_client([Send(Reply(ref, "room:1", True, ["a", "b"]))])
    assert events == [
        ReplyReceived(
            Call(ref, "room:1", "history", {"limit": 5}, 2.0),
            Reply(ref, "room:1", True, ["a", "b"]),
        )
    ]

    ref, data = wire.client.leave("room:1")
    actions = wire.to_server(data)
    assert actions == [Dispatch(Leave(ref, "room:1")), Send(Reply(ref, "room:1", True))]
    assert not wire.server.is_joined("room:1")
    wire.to_client(actions)
    assert wire.client.joined == frozenset()


def test_push_reaches_the_client_with_its_offset(wire: Wire) -> None:
    wire.join("room:1")
    push = Push("room:1", "message", {"text": "hi"}, 7)
    assert wire.to_client([Send(push)]) == [push]
    assert wire.client.offsets == {"room:1": 7}


def test_requests_for_topics_not_joined_never_reach_a_service(wire: Wire) -> None:
    for ref, data in [
        wire.client.publish("room:1", "message", ack=True),
        wire.client.call("room:1", "get"),
        wire.client.leave("room:1"),
    ]:
        actions = wire.to_server(data)
        assert actions == [
            Send(Reply.error(ref, "room:1", ErrorCode.NOT_JOINED, "topic 'room:1' not joined"))
        ]
        [event] = wire.to_client(actions)
        assert isinstance(event, ReplyReceived)
        assert event.reply.error_code == ErrorCode.NOT_JOINED


def test_a_request_without_ref_that_fails_gets_an_error_frame(wire: Wire) -> None:
    actions = wire.to_server(wire.client.publish("room:1", "message"))
    assert actions == [Send(Error(None, ErrorCode.NOT_JOINED, "topic 'room:1' not joined"))]
    [event] = wire.to_client(actions)
    assert event == ErrorReceived(None, Error(None, "not_joined", "topic 'room:1' not joined"))


def test_topic_still_joining_is_not_joined_yet(wire: Wire) -> None:
    wire.to_server(wire.client.join("room:1"))
    ref, data = wire.client.publish("room:1", "message", ack=True)
    [send] = wire.to_server(data)
    assert isinstance(send, Send)
    assert send.frame == Reply.error(
        ref, "room:1", ErrorCode.NOT_JOINED, "topic 'room:1' still joining"
    )


def _refused_join(wire: Wire) -> None:
    ref, data = wire.client.join("room:1")
    assert wire.to_server(data) == [
        Send(Reply.error(ref, "room:1", ErrorCode.ALREADY_JOINED, "topic 'room:1' already joined"))
    ]


def test_a_second_join_is_refused_while_pending_and_once_joined(wire: Wire) -> None:
    first, data = wire.client.join("room:1")
    assert wire.to_server(data) == [Dispatch(Join(first, "room:1"))]
    _refused_join(wire)
    assert wire.server.join_succeeded("room:1") == [Send(Reply(first, "room:1", True))]
    _refused_join(wire)
    assert wire.server.joined == {"room:1"}


def test_a_failed_join_leaves_nothing_behind(wire: Wire) -> None:
    ref, data = wire.client.join("room:1")
    wire.to_server(data)
    actions = wire.server.join_failed("room:1", code=ErrorCode.JOIN_REFUSED, message="room is full")
    assert actions == [Send(Reply.error(ref, "room:1", "join_refused", "room is full"))]
    [event] = wire.to_client(actions)
    assert isinstance(event, ReplyReceived)
    assert event.reply.error_message == "room is full"
    assert wire.server.joined == wire.client.joined == frozenset()
    # The topic may be joined again.
    ref, data = wire.client.join("room:1")
    assert wire.to_server(data) == [Dispatch(Join(ref, "room:1"))]


def test_join_results_without_a_pending_join_are_caller_bugs(wire: Wire) -> None:
    with pytest.raises(NoPendingJoinError, match="room:1"):
        wire.server.join_succeeded("room:1")
    with pytest.raises(NoPendingJoinError, match="room:1"):
        wire.server.join_failed("room:1", code="join_refused", message="no")


def test_the_server_ends_a_membership(wire: Wire) -> None:
    wire.join("room:1")
    actions = wire.server.ended("room:1", code=EndCode.KICKED, reason="kicked by a moderator")
    assert actions == [Send(Ended("room:1", "kicked by a moderator", "kicked"))]
    assert not wire.server.is_joined("room:1")
    assert wire.to_client(actions) == [Ended("room:1", "kicked by a moderator", "kicked")]
    assert wire.client.joined == frozenset()
    # Ending it again, or ending a topic never joined, has nothing to say.
    assert wire.server.ended("room:1", code=EndCode.KICKED, reason="again") == []


def test_ending_a_pending_join_fails_it(wire: Wire) -> None:
    ref, data = wire.client.join("room:1")
    wire.to_server(data)
    actions = wire.server.ended("room:1", code=EndCode.TOPIC_CRASHED, reason="restarting")
    assert actions == [Send(Reply.error(ref, "room:1", "topic_crashed", "restarting"))]


def test_heartbeats_are_answered_by_the_machine(wire: Wire) -> None:
    ref, data = wire.client.heartbeat()
    actions = wire.to_server(data)
    assert actions == [Send(Reply(ref, None, True))]
    assert wire.to_client(actions) == [ReplyReceived(Heartbeat(ref), Reply(ref, None, True))]
    assert wire.to_server(wire.server.codec.encode(Heartbeat(0))) == []


def test_a_batch_is_handled_frame_by_frame(wire: Wire) -> None:
    wire.join("room:1")
    data = wire.server.codec.encode_batch(
        [Heartbeat(5), Publish(0, "room:1", "a"), Publish(0, "room:2", "b")]
    )
    assert wire.to_server(data) == [
        Send(Reply(5, None, True)),
        Dispatch(Publish(0, "room:1", "a")),
        Send(Error(None, ErrorCode.NOT_JOINED, "topic 'room:2' not joined")),
    ]


def test_topic_count_is_limited() -> None:
    server = ServerMachine(JSON, max_topics=2)
    server.receive(JSON.encode(Join(1, "a")), 0.0)
    server.join_succeeded("a")
    server.receive(JSON.encode(Join(2, "b")), 0.0)  # pending counts too
    [send] = server.receive(JSON.encode(Join(3, "c")), 0.0)
    assert send == Send(Reply.error(3, "c", ErrorCode.TOO_LARGE, "at most 2 topics at once"))


# -- malformed input ----------------------------------------------------------


def test_malformed_input_gets_an_error_frame_and_the_connection_goes_on(wire: Wire) -> None:
    data = '[1,7,"room 1"]' if wire.server.codec is JSON else b"\xc1"
    [send] = wire.to_server(data)
    assert isinstance(send, Send)
    assert isinstance(send.frame, Error)
    [event] = wire.to_client([send])
    assert isinstance(event, ErrorReceived)
    assert event.error.code in {ErrorCode.BAD_FIELD, ErrorCode.BAD_ENCODING}
    ref, data = wire.client.heartbeat()
    assert wire.to_server(data) == [Send(Reply(ref, None, True))]


def test_an_error_for_a_pending_ref_resolves_that_request() -> None:
    client = ClientMachine(JSON)
    ref, _ = client.join("room:1")
    error = Error(ref, ErrorCode.BAD_FIELD, "Join frame: ...")
    [event] = client.receive(JSON.encode(error))
    assert event == ErrorReceived(Join(ref, "room:1"), error)
    assert client.forget(ref) is None


def test_server_frames_from_a_client_are_malformed(wire: Wire) -> None:
    data = wire.server.codec.encode(Push("room:1", "message"))
    assert wire.to_server(data) == [
        Send(Error(None, ErrorCode.BAD_FRAME, "Push frames go from server to client only"))
    ]


def _malformed(codec: Codec) -> Message:
    return "[99]" if codec is JSON else b"\x91\x63"


def test_a_flood_of_malformed_frames_closes_with_1008(wire: Wire) -> None:
    bad = _malformed(wire.server.codec)
    for _ in range(MAX_MALFORMED):
        [send] = wire.to_server(bad)
        assert isinstance(send, Send)
    *_, close = wire.to_server(bad)
    assert close == Close(CloseCode.POLICY_VIOLATION, "too many malformed frames")
    assert close.code == 1008
    assert wire.server.closed
    assert wire.to_server(wire.client.heartbeat()) == []


def test_the_malformed_allowance_refills_with_time(wire: Wire) -> None:
    bad = _malformed(wire.server.codec)
    for _ in range(MAX_MALFORMED):
        wire.to_server(bad)
    wire.now += MALFORMED_WINDOW_SECONDS / MAX_MALFORMED  # one token back
    assert len(wire.to_server(bad)) == 1
    assert len(wire.to_server(bad)) == 2  # the Error, then the Close
    assert wire.server.closed


def test_a_steady_trickle_of_malformed_frames_is_tolerated(wire: Wire) -> None:
    bad = _malformed(wire.server.codec)
    for _ in range(10 * MAX_MALFORMED):
        wire.now += MALFORMED_WINDOW_SECONDS / MAX_MALFORMED
        assert len(wire.to_server(bad)) == 1
    assert not wire.server.closed


def test_a_batch_of_malformed_frames_closes_and_stops_there(wire: Wire) -> None:
    codec = wire.server.codec
    batch = codec.batch_encoded([codec.encode(Heartbeat(1))] + [_malformed(codec)] * 20)
    # batch_encoded joins encoded frames as they are, malformed ones included.
    actions = wire.to_server(batch)
    assert actions[0] == Send(Reply(1, None, True))
    assert len(actions) == 1 + MAX_MALFORMED + 2
    assert isinstance(actions[-1], Close)


# -- the client machine -------------------------------------------------------


def test_client_refs_count_up_and_skip_pending_ones() -> None:
    client = ClientMachine(MSGPACK)
    assert [client.heartbeat()[0] for _ in range(3)] == [1, 2, 3]
    client._next_ref = MAX_REF  # skip ahead rather than send four billion heartbeats
    assert client.heartbeat()[0] == MAX_REF
    # Wrapped around: 1, 2 and 3 are still waiting for their replies.
    assert client.heartbeat()[0] == 4


def test_client_drops_replies_it_forgot(wire: Wire) -> None:
    ref, _ = wire.client.call("room:1", "slow")
    assert wire.client.forget(ref) == Call(ref, "room:1", "slow")
    assert wire.to_client([Send(Reply(ref, "room:1", True))]) == []


def test_client_refuses_malformed_server_messages() -> None:
    client = ClientMachine(JSON)
    with pytest.raises(DecodeError, match="unknown frame kind 42"):
        client.receive("[42]")
    with pytest.raises(DecodeError, match="the server sent a client frame"):
        client.receive(JSON.encode(Heartbeat(1)))


def test_close_reasons_fit_a_control_frame() -> None:
    with pytest.raises(ValueError, match="123 UTF-8 bytes"):
        Close(CloseCode.POLICY_VIOLATION, "x" * 124)
    assert Close(CloseCode.TRY_AGAIN_LATER, "slow consumer").code == 1013
