"""The hub frames the load generator sends and reads, packed with msgpack directly.

`hub.protocol`'s codec checks every field of every frame it builds or reads,
which is right for the hub and its client but would cost the load generator
more CPU per message than it can spare when it plays thousands of clients.
These functions write the same bytes (tests/bench/test_wire.py compares them
with `hub.protocol.MSGPACK`) and read frames as plain lists, trusting the
server. Only the msgpack subprotocol is spoken.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

from hub.protocol import (
    SUBPROTOCOL_MSGPACK,
    TAGS,
    Call,
    Ended,
    Error,
    Heartbeat,
    Join,
    Leave,
    Publish,
    Push,
    Reply,
)

SUBPROTOCOL: Final = SUBPROTOCOL_MSGPACK

JOIN: Final = TAGS[Join]
LEAVE: Final = TAGS[Leave]
CALL: Final = TAGS[Call]
PUBLISH: Final = TAGS[Publish]
HEARTBEAT: Final = TAGS[Heartbeat]
REPLY: Final = TAGS[Reply]
PUSH: Final = TAGS[Push]
ERROR: Final = TAGS[Error]
ENDED: Final = TAGS[Ended]

# A frame as msgpack reads it: [tag, field, ...].
Frame = list[Any]

_packer = msgpack.Packer(autoreset=True, use_bin_type=True)


def _pack(frame: list[Any]) -> bytes:
    packed: bytes = _packer.pack(frame)
    return packed


# Like the codec, the functions below leave off trailing fields that hold
# their defaults (empty params, a null payload), so the sizes match too.


def join(ref: int, topic: str, params: dict[str, Any]) -> bytes:
    return _pack([JOIN, ref, topic, params] if params else [JOIN, ref, topic])


def leave(ref: int, topic: str) -> bytes:
    return _pack([LEAVE, ref, topic])


def call(ref: int, topic: str, event: str, payload: Any) -> bytes:
    frame = [CALL, ref, topic, event, payload]
    return _pack(frame if payload is not None else frame[:-1])


def publish(ref: int, topic: str, event: str, payload: Any) -> bytes:
    frame = [PUBLISH, ref, topic, event, payload]
    return _pack(frame if payload is not None else frame[:-1])


def heartbeat(ref: int) -> bytes:
    return _pack([HEARTBEAT, ref])


def push(topic: str, event: str, payload: Any, offset: int | None) -> bytes:
    """A Push as the server writes it: for sizing the baselines' messages alike."""
    return _pack([PUSH, topic, event, payload, offset])


def unpack(message: bytes) -> Any:
    """One server message as msgpack reads it: a frame, or a batch (a list of frames)."""
    return msgpack.unpackb(message, raw=False)


def frames(message: bytes) -> list[Frame]:
    """The frames of one server message: a frame or a batch of them."""
    decoded = unpack(message)
    if decoded and isinstance(decoded[0], list):
        return list(decoded)
    return [decoded]
