"""Codecs: round trips, the wire layout, and every kind of malformed input."""

import json
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.protocol import (
    JSON,
    MAX_BATCH_FRAMES,
    MAX_OFFSET,
    MAX_PAYLOAD_DEPTH,
    MAX_REF,
    MSGPACK,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    SUBPROTOCOLS,
    TAGS,
    Call,
    Codec,
    DecodeError,
    EncodeError,
    Ended,
    Error,
    ErrorCode,
    Expiring,
    Frame,
    Heartbeat,
    Join,
    JsonCodec,
    Leave,
    MsgpackCodec,
    Publish,
    Push,
    Refresh,
    Reply,
    UnknownSubprotocolError,
    codec_for,
)

CODECS = [MSGPACK, JSON]
FRAME_TYPES = (
    Join,
    Leave,
    Publish,
    Call,
    Heartbeat,
    Refresh,
    Reply,
    Push,
    Error,
    Ended,
    Expiring,
)

EXAMPLES: list[Frame] = [
    Join(1, "room:lobby"),
    Join(2, "room:lobby", {"name": "alice"}, 17),
    Join(3, "room:lobby", {}, 0),
    Leave(4, "room:lobby"),
    Leave(0, "room:lobby"),
    Publish(0, "room:lobby", "message", {"text": "hi"}),
    Publish(5, "room:lobby", "typing"),
    Call(6, "game:42", "move", {"x": 1, "y": [2.5, None, True]}, 5.0),
    Call(7, "game:42", "state"),
    Heartbeat(8),
    Refresh(9, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4ifQ.c2ln"),
    Expiring(60.0),
    Expiring(0.0),
    Reply(8, None, True),
    Reply(2, "room:lobby", True, {"history": []}),
    Reply.error(5, "room:lobby", ErrorCode.NOT_JOINED, "topic 'room:lobby' not joined"),
    Push("room:lobby", "message", {"text": "héllo", "from": "alice"}, 18),
    Push("user:alice", "notice"),
    Error(None, ErrorCode.BAD_ENCODING, "not valid JSON"),
    Error(9, ErrorCode.BAD_FIELD, "Publish frame: event must be ..."),
    Ended("room:lobby", "kicked by a moderator", "kicked"),
]


# -- strategies ---------------------------------------------------------------

# str.isprintable() is false for exactly these categories (and true for the
# ASCII space, which is Zs): so these are the characters a topic may hold.
NAME_CHARACTERS = st.characters(exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
topics = st.text(NAME_CHARACTERS, min_size=1, max_size=64)  # 64 chars <= 256 bytes
names = st.text(NAME_CHARACTERS, min_size=1, max_size=16)  # 16 chars <= 64 bytes
refs = st.integers(0, MAX_REF)
positive_refs = st.integers(1, MAX_REF)
offsets = st.none() | st.integers(0, MAX_OFFSET)
timeouts = st.none() | st.floats(min_value=0.0, exclude_min=True, allow_infinity=False)


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((_depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((_depth(item) for item in value.values()), default=0)
    return 0


def payloads(*, binary: bool) -> st.SearchStrategy[Any]:
    scalars: st.SearchStrategy[Any] = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text()
    )
    if binary:
        scalars |= st.binary()
    nested = st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=12,
    )
    return nested.filter(lambda value: _depth(value) <= MAX_PAYLOAD_DEPTH)


tokens = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=64)


def frames(*, binary: bool) -> st.SearchStrategy[Frame]:
    payload = payloads(binary=binary)
    params = st.dictionaries(st.text(max_size=8), payload, max_size=3)
    return st.one_of(
        st.builds(Join, positive_refs, topics, params, offsets),
        st.builds(Leave, refs, topics),
        st.builds(Publish, refs, topics, names, payload),
        st.builds(Call, positive_refs, topics, names, payload, timeouts),
        st.builds(Heartbeat, refs),
        st.builds(Reply, positive_refs, st.none() | topics, st.just(True), payload),
        st.builds(Reply.error, positive_refs, st.none() | topics, names, st.text()),
        st.builds(Push, topics, names, payload, offsets),
        st.builds(Error, st.none() | refs, names, st.text()),
        st.builds(Ended, topics, st.text(), names),
        st.builds(Refresh, positive_refs, tokens),
        st.builds(Expiring, st.floats(min_value=0, max_value=1e9)),
    )


def _is_outcome(item: object) -> bool:
    return isinstance(item, (*FRAME_TYPES, DecodeError))


# -- round trips --------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
@pytest.mark.parametrize("frame", EXAMPLES, ids=repr)
def test_every_example_round_trips(codec: Codec, frame: Frame) -> None:
    assert codec.decode(codec.encode(frame)) == [frame]


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
def test_examples_cover_every_kind(codec: Codec) -> None:
    assert {type(frame) for frame in EXAMPLES} == set(FRAME_TYPES) == set(TAGS)


@given(frame=frames(binary=True))
def test_any_frame_round_trips_through_msgpack(frame: Frame) -> None:
    assert MSGPACK.decode(MSGPACK.encode(frame)) == [frame]


@given(frame=frames(binary=False))
def test_any_frame_round_trips_through_json(frame: Frame) -> None:
    assert JSON.decode(JSON.encode(frame)) == [frame]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
def test_any_batch_round_trips(codec: Codec, data: st.DataObject) -> None:
    batch = data.draw(st.lists(frames(binary=codec.binary), min_size=1, max_size=MAX_BATCH_FRAMES))
    assert codec.decode(codec.encode_batch(batch)) == batch
    encoded_one_by_one = codec.batch_encoded([codec.encode(frame) for frame in batch])
    assert codec.decode(encoded_one_by_one) == batch


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
def test_decode_strict_raises_the_first_problem(codec: Codec) -> None:
    good = codec.encode_batch([Heartbeat(1), Heartbeat(2)])
    assert codec.decode_strict(good) == [Heartbeat(1), Heartbeat(2)]
    bad = _raw(codec, [[5, 1], [99], [5, -1]])
    with pytest.raises(DecodeError, match="unknown frame kind 99"):
        codec.decode_strict(bad)


def test_message_types() -> None:
    assert isinstance(MSGPACK.encode(Heartbeat(1)), bytes)
    assert isinstance(JSON.encode(Heartbeat(1)), str)
    assert (MSGPACK.binary, JSON.binary) == (True, False)


@pytest.mark.parametrize("count", [1, 15, 16, MAX_BATCH_FRAMES])
def test_batch_encoded_writes_the_msgpack_array_header(count: int) -> None:
    batch = [Heartbeat(ref) for ref in range(count)]
    joined = MSGPACK.batch_encoded([MSGPACK.encode(frame) for frame in batch])
    assert joined == MSGPACK.encode_batch(batch)
    assert msgpack.unpackb(joined) == [[5, ref] for ref in range(count)]


# -- wire layout --------------------------------------------------------------


def test_wire_layout_is_the_documented_one() -> None:
    assert JSON.encode(Join(1, "room:lobby")) == '[1,1,"room:lobby"]'
    assert JSON.encode(Join(1, "room:lobby", {}, 7)) == '[1,1,"room:lobby",{},7]'
    assert JSON.encode(Leave(2, "room:lobby")) == '[2,2,"room:lobby"]'
    assert JSON.encode(Publish(0, "room:lobby", "msg", "x")) == '[3,0,"room:lobby","msg","x"]'
    assert JSON.encode(Call(3, "t", "e", None, 2.5)) == '[4,3,"t","e",null,2.5]'
    assert JSON.encode(Heartbeat(4)) == "[5,4]"
    assert JSON.encode(Reply(4, None, True)) == "[6,4,null,true]"
    assert JSON.encode(Push("t", "e", [1], 9)) == '[7,"t","e",[1],9]'
    assert JSON.encode(Error(None, "bad_frame", "m")) == '[8,null,"bad_frame","m"]'
    assert JSON.encode(Ended("t", "why", "kicked")) == '[9,"t","why","kicked"]'
    assert MSGPACK.encode(Heartbeat(4)) == bytes([0x92, 0x05, 0x04])
    assert JSON.encode_batch([Heartbeat(1), Heartbeat(2)]) == "[[5,1],[5,2]]"


def test_json_is_compact_and_keeps_unicode() -> None:
    assert JSON.encode(Push("t", "e", {"a": "é"})) == '[7,"t","e",{"a":"é"}]'


def test_trailing_fields_may_be_sent_explicitly() -> None:
    assert JSON.decode('[1,1,"t",{},null]') == [Join(1, "t")]
    assert JSON.decode('[3,0,"t","e",null]') == [Publish(0, "t", "e")]


def test_whole_number_timeouts_decode_as_floats() -> None:
    [call] = JSON.decode('[4,1,"t","e",null,5]')
    assert isinstance(call, Call)
    assert call.timeout == 5.0
    assert type(call.timeout) is float


def test_error_codes_encode_as_plain_strings() -> None:
    data = MSGPACK.encode(Error(None, ErrorCode.BAD_FRAME, "m"))
    assert msgpack.unpackb(data) == [8, None, "bad_frame", "m"]


# -- subprotocols -------------------------------------------------------------


def test_codec_for_each_subprotocol() -> None:
    assert codec_for(SUBPROTOCOL_MSGPACK) is MSGPACK
    assert codec_for(SUBPROTOCOL_JSON) is JSON
    assert SUBPROTOCOL_MSGPACK == "triohub.v1.msgpack"
    assert SUBPROTOCOL_JSON == "triohub.v1.json"
    assert SUBPROTOCOLS == (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)
    with pytest.raises(UnknownSubprotocolError, match=r"'triohub\.v0\.xml'"):
        codec_for("triohub.v0.xml")


# -- malformed input ----------------------------------------------------------


def _single_error(codec: Codec, data: Any) -> DecodeError:
    [item] = codec.decode(data)
    assert isinstance(item, DecodeError), item
    return item


MALFORMED = [
    # (codec, data, code, text the message must contain, recovered ref)
    (MSGPACK, b"\xc1", ErrorCode.BAD_ENCODING, "not valid msgpack", None),
    (MSGPACK, b"\x92\x05", ErrorCode.BAD_ENCODING, "not valid msgpack", None),
    (MSGPACK, b"\x92\x05\x01\x01", ErrorCode.BAD_ENCODING, "extra data", None),
    (MSGPACK, "[5,1]", ErrorCode.BAD_ENCODING, "takes binary messages", None),
    (JSON, "[5,1", ErrorCode.BAD_ENCODING, "not valid JSON", None),
    (JSON, "[5,1] x", ErrorCode.BAD_ENCODING, "not valid JSON", None),
    (JSON, b"[5,1]", ErrorCode.BAD_ENCODING, "takes text messages", None),
    (JSON, '[3,1,"t","e",NaN]', ErrorCode.BAD_ENCODING, "NaN", None),
    (JSON, '[3,1,"t","e",-Infinity]', ErrorCode.BAD_ENCODING, "-Infinity", None),
    (JSON, "{}", ErrorCode.BAD_FRAME, "must be a frame array or a batch array", None),
    (JSON, "[]", ErrorCode.BAD_FRAME, "got []", None),
    (JSON, '"hello"', ErrorCode.BAD_FRAME, "got 'hello'", None),
    (JSON, "[99,1]", ErrorCode.UNKNOWN_KIND, "unknown frame kind 99", None),
    (JSON, '["join",1,"t"]', ErrorCode.UNKNOWN_KIND, "unknown frame kind 'join'", None),
    (JSON, "[true,1]", ErrorCode.UNKNOWN_KIND, "unknown frame kind True", None),
    (JSON, "[0]", ErrorCode.UNKNOWN_KIND, "unknown frame kind 0", None),
    (JSON, "[1,5]", ErrorCode.MISSING_FIELD, "Join frame lacks 'topic'", 5),
    (JSON, "[5]", ErrorCode.MISSING_FIELD, "Heartbeat frame lacks 'ref'", None),
    (JSON, '[3,1,"t"]', ErrorCode.MISSING_FIELD, "Publish frame lacks 'event'", 1),
    (JSON, '[5,1,"extra"]', ErrorCode.BAD_FRAME, "Heartbeat frame has 2 fields, at most 1", 1),
    (JSON, "[5,-1]", ErrorCode.BAD_FIELD, "ref must be an int in 0..4294967295, got -1", None),
    (JSON, "[5,4294967296]", ErrorCode.BAD_FIELD, "got 4294967296", None),
    (JSON, '[5,"1"]', ErrorCode.BAD_FIELD, "ref must be an int", None),
    (JSON, "[5,1.0]", ErrorCode.BAD_FIELD, "got 1.0", None),
    (JSON, '[1,0,"t"]', ErrorCode.BAD_FIELD, "ref must be an int in 1..", 0),
    (JSON, '[4,0,"t","e"]', ErrorCode.BAD_FIELD, "always gets a reply", 0),
    (JSON, "[1,1,7]", ErrorCode.BAD_FIELD, "topic must be", 1),
    (JSON, '[1,1,"room 1"]', ErrorCode.BAD_FIELD, "got 'room 1'", 1),
    (JSON, '[1,1,""]', ErrorCode.BAD_FIELD, "topic must be", 1),
    (JSON, f'[1,1,"{"x" * 257}"]', ErrorCode.TOPIC_TOO_LONG, "longer than 256 UTF-8 bytes", 1),
    (JSON, '[3,1,"t",""]', ErrorCode.BAD_FIELD, "event must be", 1),
    (JSON, f'[3,1,"t","{"e" * 65}"]', ErrorCode.BAD_FIELD, "at most 64 UTF-8 bytes", 1),
    (JSON, '[1,1,"t",[]]', ErrorCode.BAD_FIELD, "params must be a map", 1),
    (JSON, '[1,1,"t",{},-1]', ErrorCode.BAD_FIELD, "offset must be", 1),
    (JSON, '[4,1,"t","e",null,0]', ErrorCode.BAD_FIELD, "timeout must be", 1),
    (JSON, '[4,1,"t","e",null,"5"]', ErrorCode.BAD_FIELD, "got '5'", 1),
    (JSON, '[6,1,"t",1]', ErrorCode.BAD_FIELD, "ok must be a bool", 1),
    (JSON, '[6,1,"t",false]', ErrorCode.BAD_FIELD, "error reply", 1),
    (JSON, '[3,1,"t","e",1e400]', ErrorCode.BAD_FIELD, "payload: float inf", 1),
    (JSON, '[3,1,"t","e",[1,{"a":1e400}]]', ErrorCode.BAD_FIELD, "payload[1]['a']: float inf", 1),
    (JSON, f'[3,1,"t","e",{2**64}]', ErrorCode.BAD_FIELD, "out of the 64-bit range", 1),
    (JSON, '[3,1,"t","e",{"a":"\\ud800"}]', ErrorCode.BAD_FIELD, "not valid Unicode", 1),
    (JSON, '[3,1,"t","e",{"\\udfff":1}]', ErrorCode.BAD_FIELD, "not valid Unicode", 1),
    (JSON, '[8,null,"c","\\ud800"]', ErrorCode.BAD_FIELD, "message: str", None),
    (
        MSGPACK,
        msgpack.packb([3, 1, "t", "e", {b"key": 1}]),
        ErrorCode.BAD_FIELD,
        "map key b'key' is not a str",
        1,
    ),
    (
        MSGPACK,
        msgpack.packb([3, 1, "t", "e", {1: 1}], strict_types=False),
        ErrorCode.BAD_ENCODING,
        "int is not allowed for map key",
        None,
    ),
    (
        MSGPACK,
        msgpack.packb([3, 1, "t", "e", msgpack.ExtType(42, b"x")]),
        ErrorCode.BAD_ENCODING,
        "extension type 42",
        None,
    ),
    (
        MSGPACK,
        msgpack.packb([3, 1, "t", "e", msgpack.Timestamp(0)]),
        ErrorCode.BAD_FIELD,
        "Timestamp value",
        1,
    ),
    (
        MSGPACK,
        msgpack.packb([3, 1, "t", "e", float("nan")]),
        ErrorCode.BAD_FIELD,
        "float nan",
        1,
    ),
    (
        MSGPACK,
        msgpack.packb([[5, 1]] * (MAX_BATCH_FRAMES + 1)),
        ErrorCode.TOO_LARGE,
        "a batch of 101 frames is over the limit of 100",
        None,
    ),
]


@pytest.mark.parametrize(("codec", "data", "code", "text", "ref"), MALFORMED)
def test_malformed_input_names_the_problem(
    codec: Codec, data: Any, code: ErrorCode, text: str, ref: int | None
) -> None:
    error = _single_error(codec, data)
    assert error.code == code
    assert text in error.message
    assert error.ref == ref


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
def test_payload_nesting_is_limited(codec: Codec) -> None:
    deepest = Publish(1, "t", "e", _nested(MAX_PAYLOAD_DEPTH))
    assert codec.decode(codec.encode(deepest)) == [deepest]
    error = _single_error(codec, codec.encode(Publish(1, "t", "e", _nested(MAX_PAYLOAD_DEPTH + 1))))
    assert error.code == ErrorCode.BAD_FIELD
    assert "nested deeper than 32 levels" in error.message


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
def test_very_deep_nesting_is_a_decode_error(codec: Codec) -> None:
    data = "[" * 100_000 if codec is JSON else b"\x91" * 100_000
    error = _single_error(codec, data)
    assert error.code == ErrorCode.BAD_ENCODING


def test_oversized_messages_are_refused_before_parsing() -> None:
    small_msgpack = MsgpackCodec(max_message_bytes=64)
    small_json = JsonCodec(max_message_bytes=64)
    big = Publish(1, "t", "e", "x" * 100)
    assert _single_error(small_msgpack, MSGPACK.encode(big)).code == ErrorCode.TOO_LARGE
    assert _single_error(small_json, JSON.encode(big)).code == ErrorCode.TOO_LARGE
    # The JSON limit counts UTF-8 bytes, not characters.
    wide = JSON.encode(Publish(1, "t", "e", "é" * 40))
    assert isinstance(wide, str)
    assert len(wide) <= 64 < len(wide.encode())
    assert "over the limit of 64" in _single_error(small_json, wide).message


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
def test_one_bad_frame_in_a_batch_spoils_only_itself(codec: Codec) -> None:
    good = [Heartbeat(1), Publish(0, "t", "e")]
    wire: list[Any] = [[5, 1], [99, 2], [3, 0, "t", "e"], "junk", [1, 3, "a b"]]
    data = _raw(codec, wire)
    decoded = codec.decode(data)
    assert decoded[0] == good[0]
    assert decoded[2] == good[1]
    errors = [decoded[1], decoded[3], decoded[4]]
    assert all(isinstance(error, DecodeError) for error in errors)
    assert [error.code for error in errors if isinstance(error, DecodeError)] == [
        ErrorCode.UNKNOWN_KIND,
        ErrorCode.BAD_FRAME,
        ErrorCode.BAD_FIELD,
    ]
    last = decoded[4]
    assert isinstance(last, DecodeError)
    assert last.ref == 3


def _raw(codec: Codec, wire: Any) -> Any:
    return msgpack.packb(wire) if codec is MSGPACK else json.dumps(wire)


# -- anything in, frames or DecodeErrors out ----------------------------------


@given(data=st.binary(max_size=256))
def test_arbitrary_bytes_give_frames_or_decode_errors(data: bytes) -> None:
    decoded = MSGPACK.decode(data)
    assert decoded
    assert all(_is_outcome(item) for item in decoded)


@given(text=st.text(max_size=256))
def test_arbitrary_text_gives_frames_or_decode_errors(text: str) -> None:
    decoded = JSON.decode(text)
    assert decoded
    assert all(_is_outcome(item) for item in decoded)


# Structures shaped roughly like frames, so the decoder gets past the first check.
_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-3, 12)
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=4)
)
structures = st.recursive(
    _leaves,
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=4), children, max_size=3)
        | st.builds(
            lambda tag, rest: [tag, *rest], st.integers(0, 10), st.lists(children, max_size=6)
        )
    ),
    max_leaves=20,
)


@given(value=structures)
def test_arbitrary_structures_give_frames_or_decode_errors(value: Any) -> None:
    try:
        packed = msgpack.packb(value)
    except (OverflowError, ValueError):
        packed = b"\xc1"  # an int beyond 64 bits: msgpack cannot write it
    for codec, data in ((MSGPACK, packed), (JSON, json.dumps(value, default=repr))):
        decoded = codec.decode(data)
        assert decoded
        assert all(_is_outcome(item) for item in decoded)


# -- encoding errors ----------------------------------------------------------


def test_json_cannot_carry_bytes() -> None:
    frame = Push("t", "e", {"blob": b"\x00\x01"})
    assert MSGPACK.decode(MSGPACK.encode(frame)) == [frame]
    with pytest.raises(EncodeError, match="not JSON serializable"):
        JSON.encode(frame)


# Encoding trusts frames built inside the hub and does not walk their payloads
# (it is the broadcast hot path): it refuses only what the format cannot hold.
UNENCODABLE = [
    (MSGPACK, 2**64),
    (MSGPACK, object()),
    (MSGPACK, "\ud800"),
    (JSON, b"bytes"),
    (JSON, float("nan")),
    (JSON, float("inf")),
    (JSON, object()),
]


@pytest.mark.parametrize(("codec", "payload"), UNENCODABLE)
def test_unencodable_payloads_raise_encode_error(codec: Codec, payload: object) -> None:
    with pytest.raises(EncodeError, match="cannot encode as"):
        codec.encode(Push("t", "e", payload))  # type: ignore[arg-type]


@pytest.mark.parametrize(("codec", "payload"), UNENCODABLE)
def test_encoder_recovers_after_a_failure(codec: Codec, payload: object) -> None:
    with pytest.raises(EncodeError):
        codec.encode_batch([Heartbeat(1), Push("t", "e", payload)])  # type: ignore[arg-type]
    assert codec.decode(codec.encode(Heartbeat(1))) == [Heartbeat(1)]


@pytest.mark.parametrize("codec", CODECS, ids=lambda codec: codec.subprotocol)
@pytest.mark.parametrize("count", [0, MAX_BATCH_FRAMES + 1])
def test_batches_have_a_length_limit(codec: Codec, count: int) -> None:
    with pytest.raises(EncodeError, match=r"1\.\.100 frames"):
        codec.encode_batch([Heartbeat(1)] * count)
    with pytest.raises(EncodeError, match=r"1\.\.100 frames"):
        codec.batch_encoded([codec.encode(Heartbeat(1))] * count)
