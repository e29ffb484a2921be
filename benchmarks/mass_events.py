"""Mass events: 10,000 clients connecting at once, then disconnecting at once.

    python benchmarks/mass_events.py [-n 10000] [--app hub.demo:app]

Starts `hub serve` in its own process. A crowd process opens N WebSocket
connections at once (each joins `echo:mass`), holds them, then closes them
all at once (its process ends: the kernel closes every socket together).
Meanwhile one live client keeps doing Calls to an echo topic, and /healthz
is asked every 50 ms. Reported: the worst round trip of the live client and
the slowest /healthz during each storm, and how long /healthz took to count
the crowd in and out (the count is of open connections, so it must reach N + 1
and then 1).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time

CROWD = textwrap.dedent(
    r"""
    import asyncio, base64, os, sys, json
    port, n = int(sys.argv[1]), int(sys.argv[2])
    def frame(text):
        payload = text.encode()
        return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
    async def one(index):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((
            f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: triohub.v1.json\r\n\r\n").encode())
        await reader.readuntil(b"\r\n\r\n")
        writer.write(frame(json.dumps([1, 1, "echo:mass", {}])))
        await reader.read(64)
        return writer
    async def main():
        semaphore = asyncio.Semaphore(1000)
        async def limited(index):
            async with semaphore:
                return await one(index)
        writers = await asyncio.gather(*(limited(i) for i in range(n)))
        print("connected", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        os._exit(0)  # every socket closes at once
    asyncio.run(main())
    """
)


def raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def healthz(port: int) -> tuple[float, int]:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    body = data.split(b"\r\n\r\n", 1)[1]
    return time.perf_counter() - started, int(json.loads(body)["connections"])


class LiveClient:
    """One client doing echo Calls back to back; keeps the worst round trip."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.count = 0
        self.answering = asyncio.Event()

    async def run(self, port: int, stop: asyncio.Event) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: triohub.v1.json\r\n\r\n"
            ).encode()
        )
        await reader.readuntil(b"\r\n\r\n")

        async def request(text: str) -> None:
            payload = text.encode()
            writer.write(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
            header = await reader.readexactly(2)
            length = header[1] & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            await reader.readexactly(length)

        await request(json.dumps([1, 1, "echo:live", {}]))
        ref = 2
        while not stop.is_set():
            started = time.perf_counter()
            await request(json.dumps([4, ref, "echo:live", "ping", "x"]))
            self.worst = max(self.worst, time.perf_counter() - started)
            self.count += 1
            self.answering.set()
            ref += 1
        writer.close()


async def watch(port: int, until_count: int, deadline: float) -> tuple[float, float]:
    """Ask /healthz every 50 ms until it counts `until_count`; (slowest answer, time taken)."""
    started = time.perf_counter()
    slowest = 0.0
    while time.perf_counter() - started < deadline:
        took, count = await healthz(port)
        slowest = max(slowest, took)
        if count == until_count:
            return slowest, time.perf_counter() - started
        await asyncio.sleep(0.05)
    raise RuntimeError(f"/healthz never counted {until_count} connections")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="clients in the crowd")
    parser.add_argument("--app", default="hub.demo:app")
    args = parser.parse_args()
    raise_file_limit()
    port = free_port()
    command = [sys.executable, "-m", "hub", "serve", args.app, "--port", str(port)]
    # The storm itself is measured: no handshake rate in the way (docs/security.md).
    command += ["--set", "limits.max_handshakes_per_second=0"]
    hub = subprocess.Popen([*command, "--log-level", "warning"])  # noqa: ASYNC220
    try:
        for _ in range(100):
            try:
                await healthz(port)
                break
            except OSError:
                await asyncio.sleep(0.1)
        live = LiveClient()
        stop = asyncio.Event()
        live_task = asyncio.create_task(live.run(port, stop))
        await live.answering.wait()

        crowd = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CROWD,
            str(port),
            str(args.n),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert crowd.stdout is not None and crowd.stdin is not None
        live.worst = 0.0
        slowest_in, took_in = await watch(port, args.n + 1, 300)
        await crowd.stdout.readline()
        worst_in = live.worst

        live.worst = 0.0
        crowd.stdin.write(b"go\n")
        await crowd.stdin.drain()
        slowest_out, took_out = await watch(port, 1, 300)
        worst_out = live.worst
        await crowd.wait()
        stop.set()
        await live_task
        print(
            f"{args.n:,} clients connecting at once: counted in {took_in:.1f} s; "
            f"slowest /healthz {slowest_in * 1e3:.0f} ms; live client's worst round trip "
            f"{worst_in * 1e3:.0f} ms"
        )
        print(
            f"{args.n:,} clients disconnecting at once: counted out in {took_out:.1f} s; "
            f"slowest /healthz {slowest_out * 1e3:.0f} ms; live client's worst round trip "
            f"{worst_out * 1e3:.0f} ms"
        )
    finally:
        hub.send_signal(signal.SIGTERM)
        hub.wait(30)


if __name__ == "__main__":
    asyncio.run(main())
