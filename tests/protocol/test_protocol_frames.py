"""Frame validators: the invariants every frame keeps, whoever builds it."""

import pytest

from hub.protocol import (
    MAX_OFFSET,
    MAX_REF,
    MAX_TOPIC_BYTES,
    Call,
    Ended,
    Error,
    ErrorCode,
    Heartbeat,
    InvalidFieldError,
    Join,
    Leave,
    Payload,
    Publish,
    Push,
    Reply,
)


def test_defaults_of_optional_fields() -> None:
    assert Join(1, "room:1") == Join(1, "room:1", {}, None)
    assert Publish(0, "room:1", "message").payload is None
    assert Call(1, "room:1", "get").timeout is None
    assert Push("room:1", "message").offset is None


def test_call_timeout_given_as_int_becomes_float() -> None:
    call = Call(1, "room:1", "get", None, 5)
    assert call.timeout == 5.0
    assert type(call.timeout) is float


@pytest.mark.parametrize(
    "topic",
    ["a", "room:1", "user:ünïcødé", "x" * MAX_TOPIC_BYTES, "\N{GRINNING FACE}" * 64],
)
def test_valid_topics(topic: str) -> None:
    assert Leave(0, topic).topic == topic


@pytest.mark.parametrize(
    "topic", ["x" * (MAX_TOPIC_BYTES + 1), "é" * 129, "\N{GRINNING FACE}" * 65]
)
def test_topic_over_the_byte_limit(topic: str) -> None:
    with pytest.raises(InvalidFieldError) as info:
        Leave(0, topic)
    assert info.value.code == ErrorCode.TOPIC_TOO_LONG
    assert "256 UTF-8 bytes" in info.value.message


@pytest.mark.parametrize("topic", ["", "room 1", "room\t1", "room\n", "a\x00b", "\u200b", 7, None])
def test_invalid_topics(topic: object) -> None:
    with pytest.raises(InvalidFieldError) as info:
        Leave(0, topic)  # type: ignore[arg-type]
    assert info.value.code == ErrorCode.BAD_FIELD
    assert info.value.message.startswith("topic must be")


@pytest.mark.parametrize("ref", [-1, MAX_REF + 1, True, 1.0, "1", None])
def test_invalid_refs(ref: object) -> None:
    with pytest.raises(InvalidFieldError, match="ref must be an int"):
        Heartbeat(ref)  # type: ignore[arg-type]


def test_join_and_call_need_a_ref_above_zero() -> None:
    with pytest.raises(InvalidFieldError, match=r"1\.\.4294967295"):
        Join(0, "room:1")
    with pytest.raises(InvalidFieldError, match=r"1\.\.4294967295"):
        Call(0, "room:1", "get")
    assert Publish(0, "room:1", "message").ref == 0
    assert Heartbeat(MAX_REF).ref == MAX_REF


@pytest.mark.parametrize("event", ["", "a b", "x" * 65, "é" * 33, 3])
def test_invalid_events(event: object) -> None:
    with pytest.raises(InvalidFieldError, match="event must be"):
        Publish(0, "room:1", event)  # type: ignore[arg-type]


@pytest.mark.parametrize("offset", [-1, MAX_OFFSET + 1, 1.5, True])
def test_invalid_offsets(offset: object) -> None:
    with pytest.raises(InvalidFieldError, match="offset must be"):
        Push("room:1", "message", None, offset)  # type: ignore[arg-type]


@pytest.mark.parametrize("timeout", [0, -1.0, float("inf"), float("nan"), "5", True])
def test_invalid_timeouts(timeout: object) -> None:
    with pytest.raises(InvalidFieldError, match="timeout must be"):
        Call(1, "room:1", "get", None, timeout)


@pytest.mark.parametrize("params", [None, [], {1: "a"}, {"a": 1, b"b": 2}])
def test_join_params_must_be_a_map_with_str_keys(params: object) -> None:
    with pytest.raises(InvalidFieldError, match="params must be a map"):
        Join(1, "room:1", params)  # type: ignore[arg-type]


def test_error_reply_helper_and_accessors() -> None:
    reply = Reply.error(3, "room:1", ErrorCode.NOT_JOINED, "topic 'room:1' not joined")
    assert reply == Reply(
        3, "room:1", False, {"code": "not_joined", "message": "topic 'room:1' not joined"}
    )
    assert reply.error_code == "not_joined"
    assert reply.error_message == "topic 'room:1' not joined"
    ok = Reply(3, None, True, {"anything": 1})
    assert ok.error_code is None
    assert ok.error_message is None


@pytest.mark.parametrize(
    "payload", [None, "oops", {"code": "x"}, {"message": "m"}, {"code": "", "message": "m"}]
)
def test_error_reply_needs_code_and_message(payload: object) -> None:
    with pytest.raises(InvalidFieldError, match="error reply"):
        Reply(1, "room:1", False, payload)  # type: ignore[arg-type]


def test_error_reply_may_carry_more_than_code_and_message() -> None:
    payload: dict[str, Payload] = {
        "code": "rate_limited",
        "message": "slow down",
        "retry_after": 2.5,
    }
    assert Reply(1, "room:1", False, payload).error_code == "rate_limited"


def test_reply_topic_is_none_only_for_requests_without_one() -> None:
    assert Reply(1, None, True).topic is None
    with pytest.raises(InvalidFieldError, match="topic must be"):
        Reply(1, "", True)


def test_server_frames_check_their_fields() -> None:
    assert Error(None, ErrorCode.BAD_FRAME, "what was wrong").ref is None
    with pytest.raises(InvalidFieldError, match="code must be"):
        Error(None, "bad code", "m")
    with pytest.raises(InvalidFieldError, match="reason must be a str"):
        Ended("room:1", None, "kicked")  # type: ignore[arg-type]


def test_frames_are_frozen() -> None:
    frame = Leave(1, "room:1")
    with pytest.raises(AttributeError):
        frame.topic = "room:2"  # type: ignore[misc]
