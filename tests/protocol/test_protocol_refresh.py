"""Refresh and Expiring in the protocol machines, sans IO."""

from __future__ import annotations

from hub.protocol import (
    JSON,
    MSGPACK,
    ClientMachine,
    Dispatch,
    Error,
    ErrorCode,
    Expiring,
    Refresh,
    Reply,
    ReplyReceived,
    Send,
    ServerMachine,
)


def test_the_server_machine_hands_a_refresh_to_the_session() -> None:
    machine = ServerMachine(JSON)
    client = ClientMachine(JSON)
    ref, message = client.refresh("a.b.c")
    assert machine.receive(message, now=0.0) == [Dispatch(Refresh(ref, "a.b.c"))]


def test_expiring_from_a_client_is_malformed() -> None:
    machine = ServerMachine(MSGPACK)
    [action] = machine.receive(MSGPACK.encode(Expiring(5.0)), now=0.0)
    assert action == Send(
        Error(None, ErrorCode.BAD_FRAME, "Expiring frames go from server to client only")
    )


def test_a_refresh_needs_a_reply_ref_and_a_printable_token() -> None:
    machine = ServerMachine(JSON)
    [zero_ref] = machine.receive('[10,0,"a.b.c"]', now=0.0)
    assert isinstance(zero_ref, Send) and zero_ref.frame.code == ErrorCode.BAD_FIELD  # type: ignore[union-attr]
    [spaced] = machine.receive('[10,1,"a b"]', now=0.0)
    assert spaced == Send(
        Error(
            1,
            ErrorCode.BAD_FIELD,
            "Refresh frame: token must be a non-empty printable ASCII str without spaces",
        )
    )
    [huge] = machine.receive(f'[10,2,"{"x" * 8193}"]', now=0.0)
    assert huge == Send(
        Error(2, ErrorCode.TOO_LARGE, "Refresh frame: token is longer than 8192 bytes")
    )


def test_the_client_machine_gets_expiring_and_the_refresh_reply() -> None:
    client = ClientMachine(JSON)
    ref, _message = client.refresh("a.b.c")
    events = client.receive(
        JSON.encode_batch([Expiring(30.0), Reply(ref, None, True, {"expires_in": 600.0})])
    )
    assert events == [
        Expiring(30.0),
        ReplyReceived(Refresh(ref, "a.b.c"), Reply(ref, None, True, {"expires_in": 600.0})),
    ]
