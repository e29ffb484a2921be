"""Errors the hub raises on purpose, and the error codes it puts on the wire.

Every exception here descends from `HubError`. The peer misbehaving is a
`ProtocolError` carrying an `ErrorCode` that goes back to the client in an
Error frame or an error Reply; anything else is a bug and should crash.
"""

from __future__ import annotations

import enum

# Error messages quote the offending value, but never more than this much of
# it: a client must not be able to make us echo its megabyte back.
_REPR_LIMIT = 60


class ErrorCode(enum.StrEnum):
    """Machine-readable error codes sent in Error frames and error Replies.

    Services may send codes of their own in error Replies; these are the ones
    the protocol and the hub use.
    """

    BAD_ENCODING = "bad_encoding"
    """The message is not valid msgpack / JSON (or has the wrong message type)."""
    BAD_FRAME = "bad_frame"
    """The message or a frame has the wrong shape."""
    UNKNOWN_KIND = "unknown_kind"
    """A frame's kind tag is not one this protocol version knows."""
    MISSING_FIELD = "missing_field"
    """A frame lacks a required field."""
    BAD_FIELD = "bad_field"
    """A field has the wrong type or value."""
    TOPIC_TOO_LONG = "topic_too_long"
    """A topic is longer than MAX_TOPIC_BYTES UTF-8 bytes."""
    NOT_JOINED = "not_joined"
    """The frame needs a topic the connection has not (yet) joined."""
    ALREADY_JOINED = "already_joined"
    """A Join for a topic already joined, or whose join is still pending."""
    UNKNOWN_TOPIC = "unknown_topic"
    """No service serves this topic."""
    JOIN_REFUSED = "join_refused"
    """The topic's service refused the join."""
    CALL_TIMEOUT = "call_timeout"
    """The service did not answer a Call in time."""
    SERVICE_ERROR = "service_error"
    """The service failed while handling the request."""
    TOO_LARGE = "too_large"
    """A message, batch or count is over its limit."""
    RATE_LIMITED = "rate_limited"
    """The client sends faster than it is allowed to."""
    UNKNOWN_EVENT = "unknown_event"
    """The topic's service has no handler for this event."""
    OVERLOADED = "overloaded"
    """The topic has more requests queued than it takes; try again shortly."""
    TOPIC_LIMIT = "topic_limit"
    """The hub serves as many topics as it is allowed to; a new one cannot start now."""
    NAME_TAKEN = "name_taken"
    """The user name a join claims is held by a live connection of another identity
    (also the Ended code of a membership displaced by the authenticated user of that name)."""
    FORBIDDEN = "forbidden"
    """The client may not do this: the route's permissions (or the service's `authorize`)
    do not allow the request, or it is another user's personal topic."""
    INVALID_TOKEN = "invalid_token"
    """A Refresh's token is expired, forged or malformed (the message says which)."""


def brief_repr(value: object) -> str:
    """Return `repr(value)`, cut short for quoting in an error message."""
    text = repr(value)
    if len(text) <= _REPR_LIMIT:
        return text
    return text[: _REPR_LIMIT - 3] + "..."


class HubError(Exception):
    """Base of every error the hub raises on purpose."""


class UnknownSubprotocolError(HubError, LookupError):
    """No codec serves the named WebSocket subprotocol."""


class NoPendingJoinError(HubError):
    """A join result was reported for a topic with no join pending.

    This is a bug in the caller (the connection shell), never the peer's doing.
    """


class ProtocolError(HubError):
    """The wire protocol was not followed; `code` says how.

    `message` names the offending value and is safe to send to the client.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code.value!r}, {self.message!r})"


class InvalidFieldError(ProtocolError, ValueError):
    """A frame was built with a field that breaks the frame's invariants.

    Raised by the frame classes' validators; the decoder turns it into a
    `DecodeError` for untrusted input.
    """


class DecodeError(ProtocolError):
    """Untrusted input is not a valid message or frame.

    `ref` is the client reference of the bad frame when it could be read, so
    the client can match the error to its request; otherwise None.
    """

    def __init__(self, code: ErrorCode, message: str, ref: int | None = None) -> None:
        super().__init__(code, message)
        self.ref = ref

    def __repr__(self) -> str:
        return f"DecodeError({self.code.value!r}, {self.message!r}, ref={self.ref!r})"


class EncodeError(ProtocolError):
    """A frame cannot be written by a codec (say, bytes in a payload for JSON).

    Frames built inside the hub are trusted, so this points at a service
    handing the hub a payload the subscriber's codec cannot carry.
    """


class ServiceError(HubError):
    """Raised by a service to refuse a request; the client gets an error Reply.

    `message` is for people; `code` (keyword-only) is machine-readable: an
    ErrorCode or a service's own, `service_error` unless given. Any other
    exception from a service is a bug: its topic actor crashes, its members
    are told, and their next join starts it afresh.

        raise ServiceError("that message has a banned word", code="moderated")
    """

    def __init__(self, message: str, *, code: str = ErrorCode.SERVICE_ERROR) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, code={self.code!r})"


class JoinRefusedError(ServiceError):
    """Raised by a service's `join` to refuse a member: `JoinRefusedError(message, code=...)`.

    The code is `join_refused` unless given.
    """

    def __init__(self, message: str, *, code: str = ErrorCode.JOIN_REFUSED) -> None:
        super().__init__(message, code=code)


class TopicUnavailableError(HubError):
    """A topic is not served for now (it crashed too often lately); try again later."""


class TopicLimitError(HubError):
    """The hub runs as many topics as it is allowed to; a new one cannot start now."""


class TopicExistsError(HubError):
    """A topic the server was asked to start anew is live already."""


class UnknownTopicError(HubError, LookupError):
    """No service serves the topic."""


class NoSuchActorError(HubError, LookupError):
    """No backend actor of that name is running."""


class InvalidNotificationError(HubError, ValueError):
    """A notification cannot be sent as given (its user, event or data); the message says why."""


class ConnectRefusedError(HubError):
    """Raised by an `on_connect` hook to refuse a connection: it is closed with `code`.

    `code` is 1008 (policy violation) unless given; an application's own
    codes are 4000-4999 (RFC 6455 7.4.2). `reason` (at most 123 UTF-8 bytes)
    is the close reason the client sees.

        raise ConnectRefusedError("this account is suspended", code=4003)
    """

    def __init__(self, reason: str, *, code: int = 1008) -> None:
        if code != 1008 and not 4000 <= code <= 4999:
            raise ValueError(f"a refusal's close code is 1008 or 4000-4999, got {code!r}")
        if len(reason.encode()) > 123:
            raise ValueError(f"a close reason is at most 123 UTF-8 bytes, got {brief_repr(reason)}")
        super().__init__(reason)
        self.reason = reason
        self.code = code


class ConfigError(HubError):
    """The hub's configuration is wrong; the message says which setting and why."""
