"""Bytes and text to frames and back: the two codecs, chosen by WebSocket subprotocol.

`triohub.v1.msgpack` carries binary messages in msgpack and `triohub.v1.json`
text messages in JSON. Both share one layout: a frame is an array
`[tag, field, ...]` with the fields in the order of the frame class, trailing
optional fields left off when they hold their default; a batch is an array of
frame arrays. This module owns the tag numbers.

Decoding never raises for malformed input: every problem comes back as a
`DecodeError` value in the place of the frame it spoiled, so one bad frame in
a batch costs only itself. A message that cannot be split into frames at all
decodes to a single `DecodeError`. `decode_strict`, for clients, raises instead.
"""

from __future__ import annotations

import abc
import functools
import json
import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs
import msgpack

from hub.errors import (
    DecodeError,
    EncodeError,
    ErrorCode,
    InvalidFieldError,
    UnknownSubprotocolError,
    brief_repr,
)
from hub.protocol.frames import (
    MAX_REF,
    Call,
    Ended,
    Error,
    Expiring,
    Frame,
    Heartbeat,
    Join,
    Leave,
    Publish,
    Push,
    Refresh,
    Reply,
)

SUBPROTOCOL_MSGPACK = "triohub.v1.msgpack"
SUBPROTOCOL_JSON = "triohub.v1.json"

MAX_BATCH_FRAMES = 100
"""Most frames in one batch message, either way."""

MAX_PAYLOAD_DEPTH = 32
"""Deepest nesting of arrays and maps inside one payload or params value."""

MAX_MESSAGE_BYTES = 1024 * 1024
"""Largest message the decoder reads by default (the hub's `max_message_size`
sets it); the gateway refuses bigger ones earlier, with close code 1009,
before buffering them."""

Message: TypeAlias = bytes | str
"""One WebSocket message: bytes for binary messages, str for text messages."""

# msgpack's integer range; JSON has none, so the decoder holds both to this.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1

# Fields the frame validators check only shallowly or not at all (payloads,
# free text); the decoder walks them in full, once, for untrusted input.
_WALKED_FIELDS = frozenset({"params", "payload", "message", "reason"})


@attrs.frozen
class _Layout:
    """How one frame kind sits on the wire: `[tag, *fields]`."""

    tag: int
    kind: type[Frame]
    names: tuple[str, ...]
    required: int
    # Defaults of the optional trailing fields, last field first.
    trailing_defaults: tuple[object, ...]
    walked: tuple[int, ...]
    has_ref: bool
    values_of: Callable[[Any], tuple[object, ...]]

    @classmethod
    def of(cls, tag: int, kind: type[Frame]) -> _Layout:
        fields = attrs.fields(kind)
        names = tuple(field.name for field in fields)
        defaults = [_default_of(field) for field in fields if field.default is not attrs.NOTHING]
        getter = operator.attrgetter(*names)
        values_of = getter if len(names) > 1 else (lambda frame: (getter(frame),))
        return cls(
            tag=tag,
            kind=kind,
            names=names,
            required=len(names) - len(defaults),
            trailing_defaults=tuple(reversed(defaults)),
            walked=tuple(i for i, name in enumerate(names) if name in _WALKED_FIELDS),
            has_ref=names[0] == "ref",
            values_of=values_of,
        )

    def write(self, frame: Frame) -> list[object]:
        wire = [self.tag, *self.values_of(frame)]
        for default in self.trailing_defaults:
            if wire[-1] != default:
                break
            wire.pop()
        return wire

    def read(self, wire: list[Any]) -> Frame:
        values = wire[1:]
        ref = self._recover_ref(values)
        name = self.kind.__name__
        if len(values) < self.required:
            missing = self.names[len(values)]
            raise DecodeError(ErrorCode.MISSING_FIELD, f"{name} frame lacks {missing!r}", ref)
        if len(values) > len(self.names):
            raise DecodeError(
                ErrorCode.BAD_FRAME,
                f"{name} frame has {len(values)} fields, at most {len(self.names)}",
                ref,
            )
        try:
            for index in self.walked:
                if index < len(values):
                    _walk(values[index], self.names[index])
            return self.kind(*values)
        except InvalidFieldError as err:
            raise DecodeError(err.code, f"{name} frame: {err.message}", ref) from err

    def _recover_ref(self, values: list[Any]) -> int | None:
        if self.has_ref and values:
            ref = values[0]
            if type(ref) is int and 0 <= ref <= MAX_REF:
                return ref
        return None


def _default_of(field: attrs.Attribute[Any]) -> object:
    # attrs keeps a `factory=` default as a Factory object; call it for the value.
    factory = getattr(field.default, "factory", None)
    return factory() if callable(factory) else field.default


_LAYOUTS = (
    _Layout.of(1, Join),
    _Layout.of(2, Leave),
    _Layout.of(3, Publish),
    _Layout.of(4, Call),
    _Layout.of(5, Heartbeat),
    _Layout.of(6, Reply),
    _Layout.of(7, Push),
    _Layout.of(8, Error),
    _Layout.of(9, Ended),
    _Layout.of(10, Refresh),
    _Layout.of(11, Expiring),
)
_LAYOUT_BY_TAG: Mapping[int, _Layout] = {layout.tag: layout for layout in _LAYOUTS}
_LAYOUT_BY_KIND: Mapping[type[Frame], _Layout] = {layout.kind: layout for layout in _LAYOUTS}

TAGS: Mapping[type[Frame], int] = {layout.kind: layout.tag for layout in _LAYOUTS}
"""The wire tag of each frame kind."""


class _PayloadProblem(Exception):
    """A value inside a payload is not portable; `path` locates it."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _walk(value: object, field: str) -> None:
    """Check an untrusted field value holds only portable payload values.

    Raises InvalidFieldError naming the field, the path inside it and the value.
    """
    try:
        _check_value(value, 0)
    except _PayloadProblem as problem:
        where = field + "".join(reversed(problem.path))
        raise InvalidFieldError(ErrorCode.BAD_FIELD, f"{where}: {problem.problem}") from None


def _check_value(value: object, depth: int) -> None:
    # Exact type checks: a bool is not an int here, nor a str subclass a str.
    if type(value) is str:
        _check_str(value)
    elif value is None or type(value) is bool or type(value) is bytes:
        pass
    elif type(value) is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _PayloadProblem(f"int {brief_repr(value)} is out of the 64-bit range")
    elif type(value) is float:
        if not math.isfinite(value):
            raise _PayloadProblem(f"float {value!r} is not allowed")
    elif type(value) is list:
        _check_depth(depth)
        for index, item in enumerate(value):
            _check_child(item, depth, f"[{index}]")
    elif type(value) is dict:
        _check_depth(depth)
        for key, item in value.items():
            if type(key) is not str:
                raise _PayloadProblem(f"map key {brief_repr(key)} is not a str")
            _check_str(key)
            _check_child(item, depth, f"[{key!r}]")
    else:
        raise _PayloadProblem(f"{type(value).__name__} value {brief_repr(value)} is not allowed")


def _check_depth(depth: int) -> None:
    if depth >= MAX_PAYLOAD_DEPTH:
        raise _PayloadProblem(f"nested deeper than {MAX_PAYLOAD_DEPTH} levels")


def _check_child(value: object, depth: int, step: str) -> None:
    try:
        _check_value(value, depth + 1)
    except _PayloadProblem as problem:
        problem.path.append(step)
        raise


def _check_str(value: str) -> None:
    # JSON escapes can smuggle in lone surrogates, which neither codec can
    # write back out: catch them here rather than when the hub re-encodes.
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise _PayloadProblem(f"str {brief_repr(value)} is not valid Unicode") from None


def _read_frame(wire: object) -> Frame:
    if type(wire) is not list:
        raise DecodeError(ErrorCode.BAD_FRAME, f"a frame must be an array, got {brief_repr(wire)}")
    if not wire:
        raise DecodeError(ErrorCode.BAD_FRAME, "a frame must not be an empty array")
    tag = wire[0]
    layout = _LAYOUT_BY_TAG.get(tag) if type(tag) is int else None
    if layout is None:
        raise DecodeError(ErrorCode.UNKNOWN_KIND, f"unknown frame kind {brief_repr(tag)}")
    return layout.read(wire)


def _frame_or_error(wire: object) -> Frame | DecodeError:
    try:
        return _read_frame(wire)
    except DecodeError as err:
        return err


def _to_wire(frame: Frame) -> list[object]:
    return _LAYOUT_BY_KIND[type(frame)].write(frame)


def _check_batch_length(count: int) -> None:
    if not 1 <= count <= MAX_BATCH_FRAMES:
        raise EncodeError(
            ErrorCode.TOO_LARGE, f"a batch holds 1..{MAX_BATCH_FRAMES} frames, got {count}"
        )


class Codec(abc.ABC):
    """Encodes frames into WebSocket messages and decodes messages into frames.

    An instance holds no state between calls that a caller could notice, so one
    instance serves every connection. Not for use from several threads at once.
    """

    subprotocol: str
    """The WebSocket subprotocol name that selects this codec."""
    binary: bool
    """True if messages are binary (bytes), False if text (str)."""

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes

    def encode(self, frame: Frame) -> Message:
        """Encode one frame as one message.

        Raises EncodeError if the payload holds something this codec cannot
        carry (bytes in JSON, an int beyond 64 bits, a float NaN...).
        """
        return self._dumps(_to_wire(frame))

    def encode_batch(self, frames: Sequence[Frame]) -> Message:
        """Encode 1..MAX_BATCH_FRAMES frames as one batch message.

        Raises EncodeError for a batch of another length, or as `encode` does.
        """
        _check_batch_length(len(frames))
        return self._dumps([_to_wire(frame) for frame in frames])

    def batch_encoded(self, messages: Sequence[Message]) -> Message:
        """Join single-frame messages from `encode` into one batch message.

        No frame is decoded or encoded again, so a connection can coalesce
        broadcasts encoded once for all subscribers. Each message must be the
        output of this codec's `encode`, never a batch. Raises EncodeError
        unless there are 1..MAX_BATCH_FRAMES messages.
        """
        _check_batch_length(len(messages))
        return self._join(messages)

    def decode(self, data: Message) -> list[Frame | DecodeError]:
        """Decode one message into its frames, in order.

        Never raises for malformed input: each frame that is not valid comes
        back as a DecodeError in its place, and a message that cannot be split
        into frames (bad encoding, not an array, too large, a batch of more
        than MAX_BATCH_FRAMES) gives a one-item list holding its DecodeError.
        """
        try:
            message = self._load_message(data)
        except DecodeError as err:
            return [err]
        if type(message) is not list or not message:
            return [
                DecodeError(
                    ErrorCode.BAD_FRAME,
                    f"a message must be a frame array or a batch array, got {brief_repr(message)}",
                )
            ]
        if type(message[0]) is not list:
            return [_frame_or_error(message)]
        if len(message) > MAX_BATCH_FRAMES:
            return [
                DecodeError(
                    ErrorCode.TOO_LARGE,
                    f"a batch of {len(message)} frames is over the limit of {MAX_BATCH_FRAMES}",
                )
            ]
        return [_frame_or_error(wire) for wire in message]

    def decode_strict(self, data: Message) -> list[Frame]:
        """Decode one message that must be valid throughout, as a client does.

        Raises the first DecodeError instead of returning it.
        """
        frames: list[Frame] = []
        for item in self.decode(data):
            if isinstance(item, DecodeError):
                raise item
            frames.append(item)
        return frames

    def _load_message(self, data: Message) -> object:
        self._check_message_type(data)
        size = self._size_of(data)
        if size > self.max_message_bytes:
            raise DecodeError(
                ErrorCode.TOO_LARGE,
                f"a message of {size} bytes is over the limit of {self.max_message_bytes}",
            )
        try:
            return self._loads(data)
        except DecodeError:
            raise
        except Exception as err:
            # Malformed input makes the parsers raise many unrelated types
            # (ValueError, RecursionError, msgpack's own...): all mean the same.
            detail = str(err) or type(err).__name__
            raise DecodeError(
                ErrorCode.BAD_ENCODING, f"not valid {self._format_name}: {detail}"
            ) from err

    _format_name: str

    def _size_of(self, data: Any) -> int:
        return len(data)

    @abc.abstractmethod
    def _check_message_type(self, data: Message) -> None:
        """Raise DecodeError unless `data` is the message type this codec reads."""

    @abc.abstractmethod
    def _loads(self, data: Any) -> object: ...

    @abc.abstractmethod
    def _dumps(self, wire: object) -> Message: ...

    @abc.abstractmethod
    def _join(self, messages: Sequence[Any]) -> Message: ...


def _refuse_extension(code: int, data: bytes) -> object:
    raise DecodeError(ErrorCode.BAD_ENCODING, f"msgpack extension type {code} is not allowed")


class MsgpackCodec(Codec):
    """The `triohub.v1.msgpack` codec: binary messages, msgpack."""

    subprotocol = SUBPROTOCOL_MSGPACK
    binary = True
    _format_name = "msgpack"

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        # One Packer reused for every message: this is the broadcast hot path,
        # and packb would build a new Packer each call. autoreset empties its
        # buffer after every pack, and after a failed one too.
        self._packer = msgpack.Packer(autoreset=True, use_bin_type=True)

    def _check_message_type(self, data: Message) -> None:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(
                ErrorCode.BAD_ENCODING, f"{self.subprotocol} takes binary messages, got text"
            )

    def _loads(self, data: bytes) -> object:
        # The max_*_len limits default to the message length, which is the
        # most any honest message can need. Map keys must be strings
        # (strict_map_key), and extension types are refused: JSON has neither.
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            ext_hook=_refuse_extension,
        )

    def _dumps(self, wire: object) -> bytes:
        try:
            packed: bytes = self._packer.pack(wire)
        except (TypeError, ValueError, OverflowError) as err:
            raise EncodeError(ErrorCode.BAD_FIELD, f"cannot encode as msgpack: {err}") from err
        return packed

    def _join(self, messages: Sequence[bytes]) -> bytes:
        count = len(messages)
        # fixarray (0x90 | n) up to 15 elements, then array16 (0xdc, u16 length).
        header = bytes([0x90 | count]) if count < 16 else b"\xdc" + count.to_bytes(2, "big")
        return header + b"".join(messages)


def _refuse_constant(name: str) -> object:
    raise DecodeError(ErrorCode.BAD_ENCODING, f"JSON constant {name} is not allowed")


class JsonCodec(Codec):
    """The `triohub.v1.json` codec: text messages, compact JSON."""

    subprotocol = SUBPROTOCOL_JSON
    binary = False
    _format_name = "JSON"

    def __init__(self, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        # NaN and Infinity are not JSON; refuse them both ways.
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder(parse_constant=_refuse_constant)

    def _check_message_type(self, data: Message) -> None:
        if not isinstance(data, str):
            raise DecodeError(
                ErrorCode.BAD_ENCODING, f"{self.subprotocol} takes text messages, got binary"
            )

    def _size_of(self, data: Any) -> int:
        # The limit is in bytes, and a character takes at most 4 UTF-8 bytes:
        # only a long message needs encoding to be measured.
        if len(data) * 4 <= self.max_message_bytes:
            return len(data)
        return len(data.encode(errors="surrogatepass"))

    def _loads(self, data: str) -> object:
        return self._decoder.decode(data)

    def _dumps(self, wire: object) -> str:
        try:
            return self._encoder.encode(wire)
        except (TypeError, ValueError) as err:
            raise EncodeError(ErrorCode.BAD_FIELD, f"cannot encode as JSON: {err}") from err

    def _join(self, messages: Sequence[str]) -> str:
        return "[" + ",".join(messages) + "]"


MSGPACK = MsgpackCodec()
"""The shared `triohub.v1.msgpack` codec."""

JSON = JsonCodec()
"""The shared `triohub.v1.json` codec."""

SUBPROTOCOLS: tuple[str, ...] = (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON)
"""The subprotocols the hub speaks, most preferred first: of those a client
offers, the gateway picks the first in this order (msgpack is smaller and
faster, and carries bytes)."""


def packed_size(payload: object) -> int:
    """How many bytes `payload` takes as msgpack: the measure of the hub's limits on client data.

    Raises EncodeError for a value msgpack cannot carry.
    """
    try:
        return len(msgpack.packb(payload, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as err:
        raise EncodeError(ErrorCode.BAD_FIELD, f"cannot encode as msgpack: {err}") from err


_CODECS: Mapping[str, Codec] = {MSGPACK.subprotocol: MSGPACK, JSON.subprotocol: JSON}


def codec_for(subprotocol: str, *, max_message_bytes: int = MAX_MESSAGE_BYTES) -> Codec:
    """Return the shared codec for a WebSocket subprotocol name and message size limit.

    The same name and limit always give the same instance, so that a topic
    encodes a broadcast once per codec in use, whichever connections use it.
    Raises UnknownSubprotocolError for a name not in SUBPROTOCOLS.
    """
    if subprotocol not in _CODECS:
        raise UnknownSubprotocolError(
            f"unknown subprotocol {brief_repr(subprotocol)}; "
            f"the hub speaks {', '.join(SUBPROTOCOLS)}"
        )
    if max_message_bytes == MAX_MESSAGE_BYTES:
        return _CODECS[subprotocol]
    return _codec_with_limit(subprotocol, max_message_bytes)


# A hub makes one call per connection with the limit it was configured with:
# one instance per subprotocol and limit in use, a handful in any process.
@functools.cache
def _codec_with_limit(subprotocol: str, max_message_bytes: int) -> Codec:
    return type(_CODECS[subprotocol])(max_message_bytes=max_message_bytes)
