"""Fuzz target: the codecs and the server's protocol machine, on what a client sends.

The input is a run of WebSocket messages for one connection, separated by
the byte pair C1 C1 (a byte msgpack never uses), preceded by one byte of
choices: bit 0 the codec (msgpack or JSON), bits 1-7 how far the clock moves
between messages (the malformed-frame and join allowances refill with it).
A message is of the codec's kind (binary for msgpack, text for JSON)
unless it starts with a NUL, which makes it the other kind. Joins are
answered as a service would, alternately accepted and refused.

The documented outcomes, and nothing else: every message gives the
machine's actions (Dispatch, Send, Close); every frame it sends or
dispatches survives its codec's round trip; a Close carries a policy code
and ends the input; the client machine, fed the same messages as if from a
server, gives events or raises DecodeError.
"""

from __future__ import annotations

import contextlib
from typing import Final

from hub.errors import DecodeError
from hub.protocol import (
    JSON,
    MSGPACK,
    Close,
    CloseCode,
    Codec,
    Dispatch,
    Join,
    Message,
    Send,
    ServerMachine,
)
from hub.protocol.machine import ClientMachine

SEPARATOR: Final = b"\xc1\xc1"


def messages_of(codec: Codec, stream: bytes) -> list[Message]:
    """Cut `stream` into the messages it stands for (see the module docstring)."""
    messages: list[Message] = []
    for piece in stream.split(SEPARATOR):
        other_kind = piece[:1] == b"\x00"
        if other_kind:
            piece = piece[1:]
        as_text = (codec is JSON) != other_kind
        messages.append(piece.decode("utf-8", "replace") if as_text else piece)
    return messages


def test_one_input(data: bytes) -> None:
    """Run one input; raise if the codec or the machine does anything undocumented."""
    if not data:
        return
    codec = JSON if data[0] & 1 else MSGPACK
    step = (data[0] >> 1) / 16
    machine = ServerMachine(codec)
    client = ClientMachine(codec)
    now = 0.0
    accept = True
    for message in messages_of(codec, data[1:]):
        now += step
        actions = machine.receive(message, now)
        while actions:
            action = actions.pop(0)
            if isinstance(action, Close):
                assert action.code is CloseCode.POLICY_VIOLATION, action
                assert machine.closed
                assert machine.receive(message, now) == []
                return
            assert isinstance(action, (Send, Dispatch)), action
            _check_round_trip(codec, action.frame)
            if isinstance(action, Dispatch) and isinstance(action.frame, Join):
                topic = action.frame.topic
                if accept:
                    actions += machine.join_succeeded(topic, {"members": 1})
                else:
                    actions += machine.join_failed(topic, code="refused", message="no")
                accept = not accept
        # Documented: a malformed server message raises DecodeError.
        with contextlib.suppress(DecodeError):
            client.receive(message)


def _check_round_trip(codec: Codec, frame: object) -> None:
    encoded = codec.encode(frame)  # type: ignore[arg-type]
    decoded = codec.decode(encoded)
    assert decoded == [frame], f"{frame!r} came back as {decoded!r}"
