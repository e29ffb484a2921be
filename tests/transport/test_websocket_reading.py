"""Reading client frames: the same messages and the same close codes however the bytes arrive.

The transport takes plain frames (whole, final, masked text or binary) itself
and hands everything else to wsproto; these tests cut one stream of frames at
arbitrary places so that each frame is seen by both parsers, and mix in the
frames only wsproto takes, to show that the two agree and every violation
still closes with its RFC 6455 code.
"""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_support import (
    OPCODE_BINARY,
    OPCODE_CONTINUATION,
    OPCODE_PING,
    OPCODE_TEXT,
    client_frame,
)

from hub.protocol import Message
from hub.transport import TransportClosed, WebSocketSettings, WebSocketTransport

_MULTIBYTE = "h\u00e9llo \u2603 \U0001f600"

# Frames, and the messages they carry: plain ones, a 16-bit length, empty
# ones, multibyte text, a ping between messages and a fragmented message
# with a ping inside it.
_STREAM: list[tuple[bytes, Message | None]] = [
    (client_frame(OPCODE_TEXT, b"hello"), "hello"),
    (client_frame(OPCODE_BINARY, bytes(range(256)) * 2), bytes(range(256)) * 2),
    (client_frame(OPCODE_TEXT, b""), ""),
    (client_frame(OPCODE_BINARY, b""), b""),
    (client_frame(OPCODE_TEXT, _MULTIBYTE.encode()), _MULTIBYTE),
    (client_frame(OPCODE_PING, b"p"), None),
    (client_frame(OPCODE_TEXT, b"frag", fin=False), None),
    (client_frame(OPCODE_PING, b"q"), None),
    (client_frame(OPCODE_CONTINUATION, "men\u00e9".encode()[:4], fin=False), None),
    (client_frame(OPCODE_CONTINUATION, "men\u00e9".encode()[4:] + b"ts"), "fragmen\u00e9ts"),
    (client_frame(OPCODE_BINARY, b"\x00after"), b"\x00after"),
]
_BYTES = b"".join(frame for frame, _message in _STREAM)
_MESSAGES = [message for _frame, message in _STREAM if message is not None]


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(points)]


async def _read_all(
    chunks: list[bytes], settings: WebSocketSettings | None = None
) -> list[Message]:
    """What a transport reads from `chunks`, each read on its own before the next is sent."""
    client, server = trio.testing.memory_stream_pair()
    transport = WebSocketTransport(server, settings or WebSocketSettings())
    messages: list[Message] = []

    async def read() -> None:
        while True:
            messages.append(await transport.receive())

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            for chunk in chunks:
                await client.send_all(chunk)
                # The reader has taken this chunk, and waits for the next.
                await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    return messages


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(_BYTES)), max_size=12))
def test_the_messages_are_the_same_however_the_bytes_are_cut(cuts: list[int]) -> None:
    assert trio.run(_read_all, _chunks(_BYTES, cuts)) == _MESSAGES


@pytest.mark.parametrize("cut", [0, 1, 2, 5, 7])
async def test_plain_frames_in_one_read_or_cut_anywhere_give_each_message(cut: int) -> None:
    frames = b"".join(client_frame(OPCODE_TEXT, f"m{n}".encode()) for n in range(20))
    chunks = [frames[:cut], frames[cut:]] if cut else [frames]
    assert await _read_all(chunks) == [f"m{n}" for n in range(20)]


async def _close_code(data: bytes, settings: WebSocketSettings | None = None) -> int:
    """The code of the Close the transport answers `data` with (after any good messages)."""
    client, server = trio.testing.memory_stream_pair()
    transport = WebSocketTransport(server, settings or WebSocketSettings())
    with trio.fail_after(5):
        await client.send_all(data)
        with pytest.raises(TransportClosed) as closed:
            while True:
                await transport.receive()
    return closed.value.code


@pytest.mark.parametrize(
    ("data", "code"),
    [
        # Text that is not UTF-8, in a frame that is otherwise plain.
        (client_frame(OPCODE_TEXT, b"ok \xff\xfe"), 1007),
        # Reserved bits, and a client frame without a mask.
        (client_frame(OPCODE_TEXT, b"hi", rsv=4), 1002),
        (client_frame(OPCODE_BINARY, b"hi", masked=False), 1002),
        # A new message in the middle of a fragmented one.
        (
            client_frame(OPCODE_TEXT, b"a", fin=False) + client_frame(OPCODE_TEXT, b"b"),
            1002,
        ),
        # A continuation with no message to continue.
        (client_frame(OPCODE_CONTINUATION, b"b"), 1002),
        # A length in 16 bits that fits in 7 (found by the fuzzer).
        (bytes([0x81, 0xFE, 0, 5]) + client_frame(OPCODE_TEXT, b"hello")[2:], 1002),
    ],
    ids=[
        "bad-utf8",
        "reserved-bits",
        "unmasked",
        "new-message-mid-fragments",
        "lone-continuation",
        "length-not-shortest",
    ],
)
async def test_violations_in_frames_that_look_plain_close_with_their_codes(
    data: bytes, code: int
) -> None:
    good = client_frame(OPCODE_TEXT, b"first")
    assert await _close_code(good + data) == code


async def test_a_plain_frame_over_the_size_limit_closes_with_1009() -> None:
    settings = WebSocketSettings(max_message_size=100)
    assert await _read_all([client_frame(OPCODE_BINARY, b"x" * 100)], settings) == [b"x" * 100]
    assert await _close_code(client_frame(OPCODE_BINARY, b"x" * 101), settings) == 1009
