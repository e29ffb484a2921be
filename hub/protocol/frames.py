"""The wire frames: one frozen attrs class per kind, and the rules on their fields.

Frames know nothing about encodings; `codec.py` owns the tag numbers and the
wire layout, which follows the field order of each class here.

The validators are cheap (type, range and length checks) and guard the
invariants every frame keeps, whoever builds it. Payloads are the exception:
walking a payload is not cheap, so only the decoder checks one in depth, for
untrusted input; inside the hub a payload is trusted, and an unencodable one
fails at encode time with `EncodeError`.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

import attrs

from hub.errors import ErrorCode, InvalidFieldError, brief_repr

MAX_REF = 2**32 - 1
"""Refs are client-chosen ints in 0..MAX_REF (u32). Ref 0 asks for no reply."""

MAX_OFFSET = 2**53 - 1
"""Topic offsets stay below 2**53 so JavaScript clients read them exactly."""

MAX_TOPIC_BYTES = 256
"""Longest topic, in UTF-8 bytes."""

MAX_NAME_BYTES = 64
"""Longest event name or code, in UTF-8 bytes."""

MAX_EPOCH_LENGTH = 64
"""Longest epoch a client may name in a Join, in characters."""

MAX_TOKEN_BYTES = 8192
"""Longest token a Refresh may carry (a JWT is ASCII: bytes and characters alike)."""

Payload: TypeAlias = (
    bool | int | float | str | bytes | Sequence["Payload"] | Mapping[str, "Payload"] | None
)
"""A value both codecs carry: bytes only over msgpack; lists, never tuples."""


class EndCode(enum.StrEnum):
    """Why the server ended a membership, in an Ended frame.

    Services may use codes of their own; these are the ones the hub uses.
    """

    KICKED = "kicked"
    """The topic's service removed the client."""
    TOPIC_CRASHED = "topic_crashed"
    """The topic's actor crashed and is restarting; join again to recover."""
    TOPIC_CLOSED = "topic_closed"
    """The topic is gone for good."""
    SLOW_CONSUMER = "slow_consumer"
    """The client fell too far behind on this topic."""


def _fail(attribute: attrs.Attribute[Any], rule: str, value: object) -> InvalidFieldError:
    return InvalidFieldError(
        ErrorCode.BAD_FIELD, f"{attribute.name} must be {rule}, got {brief_repr(value)}"
    )


def _is_name(value: str) -> bool:
    # isprintable() rejects every control, format, separator and surrogate
    # character except the ASCII space, so this is "printable, no whitespace".
    return value.isprintable() and " " not in value


def _utf8_length_at_most(value: str, limit: int) -> bool:
    # A character takes at most 4 UTF-8 bytes: skip the encode when it cannot matter.
    return len(value) * 4 <= limit or len(value.encode()) <= limit


def _check_ref(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or not 0 <= value <= MAX_REF:
        raise _fail(attribute, f"an int in 0..{MAX_REF}", value)


def _check_positive_ref(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not int or not 1 <= value <= MAX_REF:
        raise _fail(attribute, f"an int in 1..{MAX_REF} (this kind always gets a reply)", value)


def _check_optional_ref(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_ref(instance, attribute, value)


def _check_topic(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value or not _is_name(value):
        raise _fail(attribute, "a non-empty printable str without whitespace", value)
    if not _utf8_length_at_most(value, MAX_TOPIC_BYTES):
        raise InvalidFieldError(
            ErrorCode.TOPIC_TOO_LONG,
            f"{attribute.name} is longer than {MAX_TOPIC_BYTES} UTF-8 bytes: {brief_repr(value)}",
        )


def _check_optional_topic(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _check_topic(instance, attribute, value)


def _check_name(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if (
        not isinstance(value, str)
        or not value
        or not _is_name(value)
        or not _utf8_length_at_most(value, MAX_NAME_BYTES)
    ):
        raise _fail(
            attribute,
            f"a non-empty printable str without whitespace, at most {MAX_NAME_BYTES} UTF-8 bytes",
            value,
        )


def _check_text(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        raise _fail(attribute, "a str", value)


def _check_bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise _fail(attribute, "a bool", value)


def _check_params(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # Shallow on purpose (see the module docstring): the decoder checks values.
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise _fail(attribute, "a map with str keys", value)


def _check_offset(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_OFFSET):
        raise _fail(attribute, f"null or an int in 0..{MAX_OFFSET}", value)


def _check_optional_epoch(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not (isinstance(value, str) and 0 < len(value) <= MAX_EPOCH_LENGTH):
        raise _fail(attribute, f"a string of 1 to {MAX_EPOCH_LENGTH} characters or null", value)


def _check_timeout(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (type(value) is not float or not 0 < value < math.inf):
        raise _fail(attribute, "null or a positive finite number of seconds", value)


def _check_token(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # Not quoted back: a token is a credential, even a bad one.
    if not isinstance(value, str) or not value or not value.isascii() or not _is_name(value):
        raise InvalidFieldError(
            ErrorCode.BAD_FIELD,
            f"{attribute.name} must be a non-empty printable ASCII str without spaces",
        )
    if len(value) > MAX_TOKEN_BYTES:
        raise InvalidFieldError(
            ErrorCode.TOO_LARGE, f"{attribute.name} is longer than {MAX_TOKEN_BYTES} bytes"
        )


def _check_seconds_left(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not float or not 0 <= value < math.inf:
        raise _fail(attribute, "a finite number of seconds >= 0", value)


def _to_seconds(value: object) -> object:
    # JSON writes 5.0 as 5.0, but other clients may send a whole number as an
    # int; seconds are floats here. Anything else is left for the validator.
    return float(value) if type(value) is int else value


@attrs.frozen
class Join:
    """Client: join `topic`, passing `params` to the service's join check.

    `offset` is the last topic offset the client saw, so the service can replay
    what it missed; None when it saw nothing. `epoch` is the epoch of the
    topic's history that offset belongs to (the join reply of rooms tells
    it), so the hub can tell whether what was missed can still be had.
    Answered by a Reply to `ref`.
    """

    ref: int = attrs.field(validator=_check_positive_ref)
    topic: str = attrs.field(validator=_check_topic)
    params: Mapping[str, Payload] = attrs.field(factory=dict, validator=_check_params)
    offset: int | None = attrs.field(default=None, validator=_check_offset)
    epoch: str | None = attrs.field(default=None, validator=_check_optional_epoch)


@attrs.frozen
class Leave:
    """Client: leave a joined `topic`. Answered by a Reply unless `ref` is 0.

    After that Reply no Push for the topic reaches the client.
    """

    ref: int = attrs.field(validator=_check_ref)
    topic: str = attrs.field(validator=_check_topic)


@attrs.frozen
class Publish:
    """Client: publish `event` to a joined `topic`.

    Ref 0 wants no acknowledgement; a ref above 0 gets a Reply, ok or error.
    """

    ref: int = attrs.field(validator=_check_ref)
    topic: str = attrs.field(validator=_check_topic)
    event: str = attrs.field(validator=_check_name)
    payload: Payload = None


@attrs.frozen
class Call:
    """Client: call the service of a joined `topic` and await its Reply.

    `timeout` is how long the client is willing to wait, in seconds; the hub
    may cap it, and answers `call_timeout` when it runs out.
    """

    ref: int = attrs.field(validator=_check_positive_ref)
    topic: str = attrs.field(validator=_check_topic)
    event: str = attrs.field(validator=_check_name)
    payload: Payload = None
    timeout: float | None = attrs.field(
        default=None, converter=_to_seconds, validator=_check_timeout
    )


@attrs.frozen
class Heartbeat:
    """Client: show the connection is alive. Answered by an ok Reply unless `ref` is 0."""

    ref: int = attrs.field(validator=_check_ref)


@attrs.frozen
class Refresh:
    """Client: replace the connection's token with `token`, a newer one for the same user.

    Answered by a Reply to `ref` (topic null): ok with `{"expires_in": s}`,
    or an error, `invalid_token` (expired, forged...) or `forbidden` (a token
    of another user). The connection keeps its memberships either way.
    """

    ref: int = attrs.field(validator=_check_positive_ref)
    token: str = attrs.field(validator=_check_token, repr=False)


@attrs.frozen
class Reply:
    """Server: the answer to the client's request `ref`.

    `topic` is the request's topic, or None for a Heartbeat. An error Reply
    (`ok` false) has a map payload with at least a non-empty str "code" and a
    str "message"; build one with `Reply.error`.
    """

    ref: int = attrs.field(validator=_check_positive_ref)
    topic: str | None = attrs.field(validator=_check_optional_topic)
    ok: bool = attrs.field(validator=_check_bool)
    payload: Payload = None

    def __attrs_post_init__(self) -> None:
        if not self.ok and not _is_error_payload(self.payload):
            raise InvalidFieldError(
                ErrorCode.BAD_FIELD,
                "payload of an error reply must be a map with str 'code' and 'message', "
                f"got {brief_repr(self.payload)}",
            )

    @classmethod
    def error(cls, ref: int, topic: str | None, code: str, message: str) -> Reply:
        """Build an error Reply to `ref` with a machine-readable `code`."""
        return cls(ref, topic, False, {"code": code, "message": message})

    @property
    def error_code(self) -> str | None:
        """The error code of an error Reply; None for an ok one."""
        if self.ok:
            return None
        return self._error_field("code")

    @property
    def error_message(self) -> str | None:
        """The error message of an error Reply; None for an ok one."""
        if self.ok:
            return None
        return self._error_field("message")

    def _error_field(self, key: str) -> str:
        assert isinstance(self.payload, Mapping)  # enforced by __attrs_post_init__
        value = self.payload[key]
        assert isinstance(value, str)
        return value


def _is_error_payload(payload: Payload) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("code"), str)
        and bool(payload["code"])
        and isinstance(payload.get("message"), str)
    )


@attrs.frozen
class Push:
    """Server: `event` happened on a joined `topic`.

    `offset` is the topic's position of this event, for recovery on rejoin;
    None for events the topic does not keep.
    """

    topic: str = attrs.field(validator=_check_topic)
    event: str = attrs.field(validator=_check_name)
    payload: Payload = None
    offset: int | None = attrs.field(default=None, validator=_check_offset)


@attrs.frozen
class Error:
    """Server: a protocol-level error, such as a malformed frame.

    `ref` is the offending frame's ref when it could be read (or a ref-0
    request failed), else None. `message` names what was wrong.
    """

    ref: int | None = attrs.field(validator=_check_optional_ref)
    code: str = attrs.field(validator=_check_name)
    message: str = attrs.field(validator=_check_text)


@attrs.frozen
class Expiring:
    """Server: the connection's token runs out in `expires_in` seconds.

    Send a Refresh with a new token before then, or the server closes the
    connection with 1008 "token expired".
    """

    expires_in: float = attrs.field(converter=_to_seconds, validator=_check_seconds_left)


@attrs.frozen
class Ended:
    """Server: the client is no longer a member of `topic`.

    `code` says why in machine-readable form (see `EndCode`), `reason` in words.
    No Push for the topic follows; the client may Join again.
    """

    topic: str = attrs.field(validator=_check_topic)
    reason: str = attrs.field(validator=_check_text)
    code: str = attrs.field(validator=_check_name)


ClientFrame: TypeAlias = Join | Leave | Publish | Call | Heartbeat | Refresh
"""Frames a client sends."""

ServerFrame: TypeAlias = Reply | Push | Error | Ended | Expiring
"""Frames the server sends."""

Frame: TypeAlias = ClientFrame | ServerFrame

CLIENT_FRAME_TYPES: tuple[type[ClientFrame], ...] = (
    Join,
    Leave,
    Publish,
    Call,
    Heartbeat,
    Refresh,
)
SERVER_FRAME_TYPES: tuple[type[ServerFrame], ...] = (Reply, Push, Error, Ended, Expiring)
