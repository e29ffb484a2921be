"""Baseline: the benchmark's scenarios served by bare trio-websocket, no actors.

`hub bench --compare` runs it beside the hub to show what the hub's protocol
and actors cost over the WebSocket library underneath. Plain messages only:

- `/echo`: every message comes back as it came (idle connections sit here);
- `/fanout`: every message from any connection goes to every connection on
  /fanout, the sender too (as a hub room sends a chat message to everyone);
- `/stats`: answers one message with the number of open connections.

    python benchmarks/baselines/trio_websocket_server.py [--port 0]

Prints `listening on ws://127.0.0.1:PORT` once it accepts connections, and
stops on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from typing import Final

import trio
import trio_websocket

# Messages queued for one /fanout subscriber. One this far behind is closed
# (1013), as the hub closes a slow consumer, so that it cannot hold up the
# broadcast for the others or grow without bound.
OUTBOX_CAPACITY: Final = 1024

MAX_MESSAGE_BYTES: Final = 1024 * 1024


class _Subscriber:
    def __init__(self, websocket: trio_websocket.WebSocketConnection) -> None:
        self.websocket = websocket
        self.send_channel, self.receive_channel = trio.open_memory_channel[bytes | str](
            OUTBOX_CAPACITY
        )


class _Server:
    def __init__(self) -> None:
        self.connections = 0
        self.subscribers: set[_Subscriber] = set()

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        if request.path not in ("/echo", "/fanout", "/stats"):
            await request.reject(404, body=b"no such path\n")
            return
        websocket = await request.accept()
        self.connections += 1
        try:
            if request.path == "/echo":
                while True:
                    await websocket.send_message(await websocket.get_message())
            elif request.path == "/fanout":
                await self._fanout(websocket)
            else:
                await websocket.get_message()
                await websocket.send_message(str(self.connections))
        except trio_websocket.ConnectionClosed:
            pass  # the client went away: nothing to clean up but the count
        finally:
            self.connections -= 1

    async def _fanout(self, websocket: trio_websocket.WebSocketConnection) -> None:
        subscriber = _Subscriber(websocket)
        self.subscribers.add(subscriber)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, subscriber)
                try:
                    while True:
                        self._broadcast(await websocket.get_message())
                except trio_websocket.ConnectionClosed:
                    # Caught here, not in `handle`, so that it does not come
                    # out of the nursery wrapped in an exception group.
                    nursery.cancel_scope.cancel()
        finally:
            self.subscribers.discard(subscriber)

    def _broadcast(self, message: bytes | str) -> None:
        for subscriber in list(self.subscribers):
            try:
                subscriber.send_channel.send_nowait(message)
            except trio.WouldBlock:
                self.subscribers.discard(subscriber)
                subscriber.send_channel.close()

    async def _write(self, subscriber: _Subscriber) -> None:
        try:
            async with subscriber.receive_channel:
                async for message in subscriber.receive_channel:
                    await subscriber.websocket.send_message(message)
            # Closed for falling behind (see OUTBOX_CAPACITY).
            await subscriber.websocket.aclose(1013, "too slow")
        except trio_websocket.ConnectionClosed:
            pass  # the reader sees it too and ends the connection


async def serve(port: int) -> None:
    server = _Server()
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            listener = await nursery.start(
                trio_websocket.serve_websocket,
                server.handle,
                "127.0.0.1",
                port,
                None,
            )
            print(f"listening on ws://127.0.0.1:{listener.port}", flush=True)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks one)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(serve, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
