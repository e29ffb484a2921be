"""Baseline: the benchmark's scenarios served by `websockets` on asyncio, no actors.

`hub bench --compare` runs it beside the hub and the trio-websocket baseline.
Plain messages only, the same paths as that one:

- `/echo`: every message comes back as it came (idle connections sit here);
- `/fanout`: every message from any connection goes to every connection on
  /fanout, the sender too, with `websockets.asyncio.server.broadcast` (which
  writes without waiting for slow clients);
- `/stats`: answers one message with the number of open connections.

    python benchmarks/baselines/websockets_server.py [--port 0]

Prints `listening on ws://127.0.0.1:PORT` once it accepts connections, and
stops on SIGINT or SIGTERM. The standard asyncio event loop, as most
deployments of websockets run.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
from typing import Final

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

MAX_MESSAGE_BYTES: Final = 1024 * 1024

# Connections waiting to be accepted by the kernel; asyncio's default is 100.
BACKLOG: Final = 4096

_PATHS: Final = ("/echo", "/fanout", "/stats")


class _Counts:
    connections = 0
    subscribers: set[ServerConnection] = set()


def _refuse_unknown_paths(connection: ServerConnection, request: Request) -> Response | None:
    if request.path not in _PATHS:
        return connection.respond(404, "no such path\n")
    return None


async def _handle(websocket: ServerConnection) -> None:
    path = websocket.request.path if websocket.request is not None else ""
    _Counts.connections += 1
    try:
        if path == "/echo":
            async for message in websocket:
                await websocket.send(message)
        elif path == "/fanout":
            _Counts.subscribers.add(websocket)
            try:
                async for message in websocket:
                    broadcast(_Counts.subscribers, message)
            finally:
                _Counts.subscribers.discard(websocket)
        else:
            await websocket.recv()
            await websocket.send(str(_Counts.connections))
    except ConnectionClosed:
        pass  # the client went away: nothing to clean up but the count
    finally:
        _Counts.connections -= 1


async def serve_until_signal(port: int) -> None:
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set_result, None)
    server: Server
    async with serve(
        _handle,
        "127.0.0.1",
        port,
        process_request=_refuse_unknown_paths,
        compression=None,
        max_size=MAX_MESSAGE_BYTES,
        backlog=BACKLOG,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://127.0.0.1:{bound}", flush=True)
        await stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks one)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve_until_signal(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
