"""Write the hand-made seeds of each target's corpus: `python fuzz/seeds.py`.

Each seed is one well-formed or one typically broken input, named for what
it is; the fuzzer mutates from them. The corpus directories also hold what
`scripts/fuzz` merged in (inputs that reached new code, named by their hash).
"""

from __future__ import annotations

import base64
import os
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.protocol import (
    JSON,
    MSGPACK,
    Call,
    Codec,
    Heartbeat,
    Join,
    Leave,
    Publish,
)

CORPUS = Path(__file__).resolve().parent / "corpus"
MASK = b"\x11\x22\x33\x44"
KEY = base64.b64encode(b"0123456789abcdef")


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    mask: bytes | None = MASK,
    rsv: int = 0,
    length: int | None = None,
) -> bytes:
    """One client frame; `length` may lie about the payload's size."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    size = len(payload) if length is None else length
    masked = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes((first, masked | size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, masked | 126, size)
    else:
        head = struct.pack("!BBQ", first, masked | 127, size)
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close(code: int | None, reason: bytes = b"") -> bytes:
    return frame(0x8, b"" if code is None else struct.pack("!H", code) + reason)


# The choices byte: read size bits 0-5 ((n+1)**2 bytes), bit 6 trailing, bit 7 EOF.
EOF_WHOLE = bytes((0x80 | 0x3F,))
EOF_BYTEWISE = bytes((0x80,))
SILENT = bytes((0x3F,))
TRAILING = bytes((0xC0 | 0x3F,))

WEBSOCKET = {
    "text": EOF_WHOLE + frame(0x1, b"hello") + close(1000),
    "binary": EOF_WHOLE + frame(0x2, b"\x93\x01\x02\x03") + close(1000, b"bye"),
    "fragmented": EOF_WHOLE
    + frame(0x1, b"hel", fin=False)
    + frame(0x9, b"ping")
    + frame(0x0, b"lo")
    + close(3001, b"app"),
    "bytewise": EOF_BYTEWISE + frame(0x1, "h\u00e9llo".encode()) + frame(0xA, b"") + close(None),
    "trailing": TRAILING + frame(0x2, b"x" * 200) + close(1001),
    "silent": SILENT + frame(0x1, b"then nothing"),
    "unmasked": EOF_WHOLE + frame(0x1, b"hello", mask=None),
    "reserved_bit": EOF_WHOLE + frame(0x1, b"hello", rsv=4),
    "bad_utf8": EOF_WHOLE + frame(0x1, b"\xff\xfe"),
    "too_big": EOF_WHOLE + frame(0x2, b"x" * 100, length=5000),
    "too_big_fragments": EOF_WHOLE + frame(0x2, b"x" * 3000, fin=False) + frame(0x0, b"x" * 3000),
    "long_length": EOF_WHOLE + frame(0x2, b"", length=1 << 40),
    "fragmented_ping": EOF_WHOLE + frame(0x9, b"p", fin=False),
    "close_1005": EOF_WHOLE + close(1005),
    "close_bad_reason": EOF_WHOLE + close(1000, b"\xff"),
    "continuation_first": EOF_WHOLE + frame(0x0, b"x"),
}


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n" + body


UPGRADE = (
    "GET /ws?token=t HTTP/1.1\nHost: hub.example\nUpgrade: websocket\n"
    "Connection: Upgrade\nSec-WebSocket-Version: 13\n"
    f"Sec-WebSocket-Key: {KEY.decode()}\n"
    "Sec-WebSocket-Protocol: triohub.v1.msgpack\n"
)

HTTP = {
    "get_index": EOF_WHOLE + request("GET / HTTP/1.1\nHost: hub.example\n"),
    "keep_alive": EOF_WHOLE
    + request("GET /healthz HTTP/1.1\nHost: a\n")
    + request('GET /chat.css HTTP/1.1\nHost: a\nIf-None-Match: "x", W/"y"\n'),
    "head": EOF_WHOLE + request("HEAD /index.html HTTP/1.1\nHost: a\n"),
    "http10": EOF_WHOLE + request("GET /healthz HTTP/1.0\n"),
    "post_body": EOF_WHOLE + request("POST /echo HTTP/1.1\nHost: a\nContent-Length: 5\n", b"hello"),
    "post_chunked": EOF_WHOLE
    + request(
        "POST /echo HTTP/1.1\nHost: a\nTransfer-Encoding: chunked\n", b"5\r\nhello\r\n0\r\n\r\n"
    ),
    "post_too_big": EOF_WHOLE
    + request("POST /echo HTTP/1.1\nHost: a\nContent-Length: 5000\n", b"x" * 5000),
    "expect_continue": EOF_WHOLE
    + request("PUT /echo HTTP/1.1\nHost: a\nContent-Length: 2\nExpect: 100-continue\n", b"ok"),
    "upgrade": EOF_WHOLE + request(UPGRADE) + frame(0x2, b"\x91\x05") + close(1000),
    "upgrade_silent": SILENT + request(UPGRADE) + frame(0x1, b"[5]"),
    "upgrade_no_token": EOF_WHOLE + request(UPGRADE.replace("?token=t", "")),
    "upgrade_origin": EOF_WHOLE + request(UPGRADE + "Origin: https://evil.example\n"),
    "upgrade_version": EOF_WHOLE + request(UPGRADE.replace("Version: 13", "Version: 8")),
    "upgrade_head": EOF_WHOLE + request(UPGRADE.replace("GET", "HEAD", 1)),
    "upgrade_subprotocol": EOF_WHOLE + request(UPGRADE.replace("triohub.v1.msgpack", "chat")),
    "upgrade_with_body": EOF_WHOLE + request(UPGRADE + "Content-Length: 3\n", b"abc"),
    "plain_get_ws": EOF_WHOLE + request("GET /ws HTTP/1.1\nHost: a\n"),
    "wrong_method": EOF_WHOLE + request("DELETE /healthz HTTP/1.1\nHost: a\n"),
    "traversal": EOF_WHOLE + request("GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\nHost: a\n"),
    "long_name": EOF_WHOLE + request(f"GET /{'a' * 1000} HTTP/1.1\nHost: a\n"),
    "http2": EOF_WHOLE + request("GET / HTTP/2.0\nHost: a\n"),
    "smuggling": EOF_WHOLE
    + request(
        "POST /echo HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n",
        b"0\r\n\r\n",
    ),
    "big_head": EOF_WHOLE + request("GET / HTTP/1.1\nHost: a\n" + "X-Pad: y\n" * 300),
    "garbage": EOF_WHOLE + b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    "slow_head": SILENT + b"GET / HTTP/1.1\r\nHost: a\r\n",
    "bytewise": EOF_BYTEWISE + request("GET /healthz HTTP/1.1\nHost: a\n"),
}


def messages(codec: Codec, *frames: object) -> bytes:
    parts = []
    for item in frames:
        encoded = item if isinstance(item, (bytes, str)) else codec.encode(item)  # type: ignore[arg-type]
        parts.append(encoded.encode() if isinstance(encoded, str) else encoded)
    return b"\xc1\xc1".join(parts)


def protocol_seeds() -> dict[str, bytes]:
    seeds = {}
    for name, codec, flag in (("msgpack", MSGPACK, 0), ("json", JSON, 1)):
        choices = bytes((flag | 2,))
        session = messages(
            codec,
            Join(1, "room:a", {"user": "ann"}),
            Join(2, "room:b", {}),
            Publish(0, "room:a", "message", {"text": "hi", "n": [1, 2.5, None, True]}),
            Call(3, "room:a", "members", None, 5.0),
            Heartbeat(4),
            Leave(5, "room:a"),
            Publish(6, "room:a", "message", "after leaving"),
        )
        seeds[f"{name}_session"] = choices + session
        batch = codec.encode_batch([Heartbeat(1), Join(2, "t", {}), Heartbeat(0)])
        seeds[f"{name}_batch"] = choices + messages(codec, batch)
        seeds[f"{name}_other_kind"] = choices + b"\x00" + messages(codec, Heartbeat(1))
    seeds["msgpack_malformed"] = b"\x00" + b"\xc1\xc1".join(
        [b"\x93\xff", b"\xc7\x01\x05x", b"\x91" * 40 + b"\x90", b"\x92\x63\x01", b"\x80"]
    )
    seeds["json_malformed"] = b"\x01" + b"\xc1\xc1".join(
        [b"[", b"[1e999]", b"[NaN]", b"[[" * 40, b"[99, 1]", b'{"a": 1}', b"[3, -1]"]
    )
    seeds["json_flood"] = b"\x01" + b"\xc1\xc1".join([b"[]"] * 15)
    return seeds


def write(target: str, seeds: dict[str, bytes]) -> None:
    directory = CORPUS / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)


def main() -> None:
    write("websocket_frames", WEBSOCKET)
    write("http_request", HTTP)
    write("protocol_machine", protocol_seeds())
    print(f"seeds written under {os.path.relpath(CORPUS)}")


if __name__ == "__main__":
    main()
