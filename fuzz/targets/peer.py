"""The fuzzed client's side of a socket pair: send its reads one at a time, keep what comes back.

Shared by the targets that drive a real server over a socket (websocket_frames,
http_request).
"""

from __future__ import annotations

import socket

import trio
import trio.testing


async def send_reads(client: trio.socket.SocketType, reads: list[bytes], eof: bool) -> None:
    """Send each read, letting the server take it before the next; then EOF if `eof`."""
    for data in reads:
        try:
            await client.send(data)
        except OSError:
            return  # the server closed: what it wrote is still checked
        # Let the server take this read before the next one, so reads stay apart.
        await trio.testing.wait_all_tasks_blocked()
    if eof:
        client.shutdown(socket.SHUT_WR)


async def read_all(client: trio.socket.SocketType, written: bytearray) -> None:
    """Append everything the server writes to `written`, until it closes."""
    while True:
        try:
            data = await client.recv(65536)
        except OSError:
            return
        if not data:
            return
        written += data
