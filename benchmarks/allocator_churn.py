"""What a bare trio server keeps of its memory after waves of connections: the floor for `churn`.

    python benchmarks/allocator_churn.py [-n 1000] [--waves 10]

Starts a bare trio TCP server in its own process (one task per connection,
reading until EOF and answering each read with two bytes; no actors, no
WebSocket, no hub). Then, like `hub bench churn`, `--waves` waves of N
clients connect at once, each sends a few bytes and waits for the answer,
and all close abruptly (RST); once the server counts none, its RSS and
CPython's small-object allocator (pymalloc: arenas of 1 MiB, each returned
to the system only once every block in it is free) are read. What such a
program keeps after the first wave is what CPython keeps for the sockets,
tasks and buffers of 1,000 connections at once (docs/benchmarks.md, churn).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

# pymalloc's figures in sys._debugmallocstats()'s report.
_ARENAS = re.compile(r"# arenas allocated current\s*=\s*([\d,]+)")
_IN_USE = re.compile(r"# bytes in allocated blocks\s*=\s*([\d,]+)")


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _pymalloc() -> tuple[int, float]:
    """(arenas allocated, MB in blocks in use), read from sys._debugmallocstats (on fd 2)."""
    with tempfile.TemporaryFile() as report:
        saved = os.dup(2)
        os.dup2(report.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        report.seek(0)
        text = report.read().decode()
    arenas = _ARENAS.search(text)
    in_use = _IN_USE.search(text)
    if arenas is None or in_use is None:
        return 0, 0.0
    return int(arenas.group(1).replace(",", "")), int(in_use.group(1).replace(",", "")) / 1e6


def serve() -> None:
    """The bare server: prints its two ports, then serves until killed."""
    import trio

    live = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal live
        live += 1
        try:
            while await stream.receive_some(65536):
                await stream.send_all(b"ok")
        except trio.BrokenResourceError:
            pass
        finally:
            live -= 1
            await stream.aclose()

    async def status(stream: trio.SocketStream) -> None:
        arenas, in_use = _pymalloc()
        await stream.send_all(f"{live} {_rss_mib():.2f} {arenas} {in_use:.2f}\n".encode())
        await stream.aclose()

    async def main() -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1", backlog=4096)
        status_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        ports = [listener.socket.getsockname()[1] for listener in (*listeners, *status_listeners)]
        print(ports[0], ports[1], flush=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, handler, listeners)
            nursery.start_soon(trio.serve_listeners, status, status_listeners)

    trio.run(main)


async def _status(port: int) -> tuple[int, float, int, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = await reader.readline()
    writer.close()
    live, rss, arenas, in_use = line.split()
    return int(live), float(rss), int(arenas), float(in_use)


async def _churn(port: int, status_port: int, waves: int, clients: int) -> None:
    setups = asyncio.Semaphore(64)

    async def connect() -> asyncio.StreamWriter:
        async with setups:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"hello " * 10)
            await reader.readexactly(2)
            return writer

    _live, start, arenas, in_use = await _status(status_port)
    print(f"start: RSS {start:.1f} MiB, {arenas} arenas, {in_use:.1f} MB in use")
    for wave in range(1, waves + 1):
        writers = await asyncio.gather(*(connect() for _ in range(clients)))
        _live, peak, peak_arenas, peak_in_use = await _status(status_port)
        for writer in writers:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        while True:
            live, rss, arenas, in_use = await _status(status_port)
            if live == 0:
                break
            await asyncio.sleep(0.05)
        print(
            f"wave {wave}: at its peak RSS {peak:.1f} MiB, {peak_arenas} arenas, "
            f"{peak_in_use:.1f} MB in use; after it RSS {rss:.1f} MiB ({rss / start:.0%} of "
            f"the start), {arenas} arenas, {in_use:.1f} MB in use"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--clients", type=int, default=1000, help="clients per wave")
    parser.add_argument("--waves", type=int, default=10)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return 0
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        port, status_port = (int(part) for part in server.stdout.readline().split())
        asyncio.run(_churn(port, status_port, args.waves, args.clients))
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
