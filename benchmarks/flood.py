"""What one hostile client costs a hub: server CPU for a heartbeat or a 16-byte-fragment flood.

    .venv/bin/python benchmarks/flood.py                 # both floods, 200,000 messages each
    .venv/bin/python benchmarks/flood.py --messages 50000 --kind fragments
    PYTHONPATH=/path/to/old/checkout .venv/bin/python benchmarks/flood.py   # another version

Starts `hub serve` (the demo app) on a free port of 127.0.0.1 with every
per-address limit in force (`limits.unlimited_addresses` empty), then floods
it from one client (a process of its own) with `--messages` messages:
hub-protocol heartbeats, or small Publishes cut into 16-byte fragments,
written as fast as the socket takes them. When the hub closes the flooder,
it connects again and goes on with the rest, as an attacker would.
Meanwhile a well-behaved client makes 50 heartbeat round trips a second.
Prints the hub's CPU seconds spent on the whole flood (from /proc: a total,
so it means the same on a loaded machine, where the wall time does not),
how often the flooder was closed and with what, and the well-behaved
client's round trips.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import trio

import hub.config
from hub.bench.procstat import cpu_seconds

_URL = re.compile(r"ws://127\.0\.0\.1:(\d+)/ws")
_KEY = "dHJpb2h1Yi10ZXN0LWtleQ=="  # base64 of 16 bytes (RFC 6455 §4.1)


def frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One masked client frame (the mask is zero: XOR with it leaves the payload as is)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    return head + b"\0\0\0\0" + payload


def heartbeats() -> tuple[bytes, int]:
    """A write of 256 heartbeats (no reply asked), and how many messages it holds."""
    return frame(0x1, json.dumps([5, 0]).encode()) * 256, 256


def fragments() -> tuple[bytes, int]:
    """A write of 32 small Publishes, each in 16-byte fragments."""
    message = json.dumps([3, 0, "echo:flood", "say", "x" * 80]).encode()
    pieces = [message[start : start + 16] for start in range(0, len(message), 16)]
    one = b"".join(
        frame(0x1 if index == 0 else 0x0, piece, fin=index == len(pieces) - 1)
        for index, piece in enumerate(pieces)
    )
    return one * 32, 32


async def open_websocket(port: int) -> trio.SocketStream:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    request = (
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: triohub.v1.json\r\n\r\n"
    )
    await stream.send_all(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        data = await stream.receive_some(4096)
        if not data:
            raise ConnectionError("closed during the handshake")
        head += data
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())
    return stream


async def flooder(
    port: int, data: bytes, per_chunk: int, join: bytes | None, total: int, stats: dict[str, int]
) -> None:
    """Send `total` messages, `per_chunk` in each write of `data`, reconnecting when closed."""
    stats["sent"] = 0
    while stats["sent"] < total:
        try:
            stream = await open_websocket(port)
        except (OSError, ConnectionError):
            stats["refused"] = stats.get("refused", 0) + 1
            await trio.sleep(0.01)
            continue
        stats["connections"] = stats.get("connections", 0) + 1
        try:
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(_drain, stream, stats, nursery.cancel_scope)
                if join is not None:
                    await stream.send_all(join)
                while stats["sent"] < total:
                    await stream.send_all(data)
                    stats["sent"] += per_chunk
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


async def _drain(stream: trio.SocketStream, stats: dict[str, int], scope: trio.CancelScope) -> None:
    """Read what the hub sends; note its Close code."""
    buffer = b""
    try:
        while data := await stream.receive_some(65536):
            buffer = (buffer + data)[-4096:]
            if b"\x88" in buffer:
                index = buffer.rfind(b"\x88")
                if len(buffer) >= index + 4:
                    code = struct.unpack("!H", buffer[index + 2 : index + 4])[0]
                    stats[f"closed {code}"] = stats.get(f"closed {code}", 0) + 1
                    buffer = b""
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    scope.cancel()


async def well_behaved(port: int, latencies: list[float]) -> None:
    stream = await open_websocket(port)
    beat = frame(0x1, json.dumps([5, 1]).encode())
    async with stream:
        while True:
            started = time.perf_counter()
            await stream.send_all(beat)
            await stream.receive_some(4096)
            latencies.append(time.perf_counter() - started)
            await trio.sleep(0.02)  # 50 a second: well within the hub's rate limits


async def flood_for(port: int, kind: str, total: int) -> dict[str, int]:
    data, per_chunk = heartbeats() if kind == "heartbeats" else fragments()
    join = frame(0x1, json.dumps([1, 1, "echo:flood"]).encode()) if kind == "fragments" else None
    stats: dict[str, int] = {}
    await flooder(port, data, per_chunk, join, total, stats)
    return stats


async def measure(port: int, pid: int, kind: str, total: int) -> dict[str, object]:
    """Flood from another process; make round trips and read the hub's CPU time from this one."""
    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(well_behaved, port, latencies)
        await trio.sleep(0.5)
        before = cpu_seconds(pid)
        started = time.monotonic()
        command = [sys.executable, __file__, "--flood", kind, "--port", str(port)]
        result = await trio.run_process([*command, "--messages", str(total)], capture_stdout=True)
        seconds = time.monotonic() - started
        # What the hub had still to read: wait until its CPU time stops growing.
        used = cpu_seconds(pid) - before
        while True:
            await trio.sleep(0.5)
            now_used = cpu_seconds(pid) - before
            if now_used - used < 0.02:
                break
            used = now_used
        nursery.cancel_scope.cancel()
    return {
        "kind": kind,
        "messages": total,
        "server_cpu_seconds": round(used, 2),
        "flood_wall_seconds": round(seconds, 1),
        "flooder": json.loads(result.stdout),
        "round_trips": len(latencies),
        "round_trip_median_ms": round(statistics.median(latencies) * 1000, 3)
        if latencies
        else None,
        "round_trip_max_ms": round(max(latencies) * 1000, 3) if latencies else None,
    }


def start_hub() -> tuple[subprocess.Popen[str], int]:
    environ = dict(os.environ)
    if hasattr(hub.config, "LimitsConfig"):  # a hub older than its limits has none to set
        environ["TRIOHUB_LIMITS__UNLIMITED_ADDRESSES"] = ""
    process = subprocess.Popen(
        [sys.executable, "-m", "hub", "serve", "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environ,
    )
    assert process.stdout is not None
    for line in _lines(process):
        match = _URL.search(line)
        if match:
            return process, int(match.group(1))
    raise SystemExit("the hub did not start")


def _lines(process: subprocess.Popen[str]) -> Iterator[str]:
    assert process.stdout is not None
    yield from iter(process.stdout.readline, "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="flood size")
    parser.add_argument("--kind", choices=["heartbeats", "fragments", "both"], default="both")
    # The flooder's own process (so that it does not slow the well-behaved client down).
    parser.add_argument("--flood", choices=["heartbeats", "fragments"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        print(json.dumps(trio.run(flood_for, args.port, args.flood, args.messages)))
        return
    kinds = ["heartbeats", "fragments"] if args.kind == "both" else [args.kind]
    for kind in kinds:
        process, port = start_hub()
        try:
            result = trio.run(measure, port, process.pid, kind, args.messages)
        finally:
            process.terminate()
            process.wait(timeout=30)
        print(json.dumps(result))


if __name__ == "__main__":
    main()
