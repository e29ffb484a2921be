"""`hub serve --workers N`: real worker processes on one port, on a real Valkey.

Each topic runs on one worker, the others relay to it
(docs/deployment.md#ownership-one-node-per-topic).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import pytest
import trio
from hub_support import open_client
from valkey_support import ValkeyServer
from wire_support import http_get

from hub.bench.procstat import children

APP = """
from hub.app import Hub
from hub.services import Service


class Shout(Service):
    async def handle_event(self, member, event, payload):
        self.topic.broadcast(event, payload)


app = Hub("shout")
app.route("shout:*", Shout)
"""


def environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, ended but not reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


@attrs.define
class Pool:
    process: trio.Process
    port: int
    output: bytearray

    async def healthz(self) -> dict[str, object]:
        response = await http_get(self.port, "/healthz")
        assert response.status == 200
        body: dict[str, object] = json.loads(response.body)
        return body

    async def workers_answering(self, wanted: set[int]) -> None:
        """Ask /healthz (each time a new connection) until each wanted worker has answered."""
        seen: set[int] = set()
        while not wanted <= seen:
            try:
                body = await self.healthz()
            except OSError:
                continue  # a worker that is still starting
            seen.add(int(body["worker"]))  # type: ignore[call-overload]


@asynccontextmanager
async def worker_pool(tmp_path: Path, redis_url: str, count: int = 2) -> AsyncIterator[Pool]:
    (tmp_path / "shout_app.py").write_text(textwrap.dedent(APP))
    port = free_port()
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "hub",
            "serve",
            "shout_app:app",
            "--workers",
            str(count),
            "--port",
            str(port),
            "--redis",
            redis_url,
        ],
        cwd=tmp_path,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    output = bytearray()

    async def collect() -> None:
        assert process.stdout is not None
        async for chunk in process.stdout:
            output.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        try:
            yield Pool(process, port, output)
        finally:
            if process.returncode is None:
                for child in children(process.pid):
                    os.kill(child, signal.SIGKILL)
                process.kill()
            await process.wait()


async def subscribed_nodes(server: ValkeyServer, topic: str) -> int:
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        channel = f"triohub:topic:{topic}".encode()
        conn.sendall(b"PUBSUB NUMSUB " + channel + b"\r\n")
        reply = conn.recv(4096)
    # *2\r\n$len\r\nchannel\r\n:count\r\n
    return int(reply.rsplit(b":", 1)[1].split(b"\r\n")[0])


@pytest.mark.timeout(120)
async def test_workers_share_the_port_and_a_broadcast_reaches_every_worker(
    tmp_path: Path, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    with trio.fail_after(90):
        async with worker_pool(tmp_path, valkey_server.url) as pool:
            await pool.workers_answering({0, 1})
            url = f"ws://127.0.0.1:{pool.port}/ws"
            async with contextlib.AsyncExitStack() as stack:
                clients = []
                # Clients land on either worker; join until both workers have members.
                while len(clients) < 2 or await subscribed_nodes(valkey_server, "shout:x") < 2:
                    client = await stack.enter_async_context(open_client(url, "json"))
                    await client.join_ok("shout:x")
                    clients.append(client)
                    assert len(clients) <= 40, "40 clients all landed on one worker"
                for n in range(20):
                    await clients[0].publish("shout:x", "n", n)
                for client in clients:
                    got = [(await client.next_push("shout:x")).payload for _ in range(20)]
                    assert got == list(range(20))
                    assert client.take_unread() == []
            # A parent killed outright: its workers drain and end by themselves.
            workers = children(pool.process.pid)
            assert len(workers) == 2
            pool.process.kill()
            await pool.process.wait()
            while any(running(pid) for pid in workers):
                await trio.lowlevel.checkpoint()


@pytest.mark.timeout(120)
async def test_a_killed_worker_is_restarted_and_sigterm_drains_them_all(
    tmp_path: Path, valkey_server: ValkeyServer
) -> None:
    with trio.fail_after(90):
        async with worker_pool(tmp_path, valkey_server.url) as pool:
            await pool.workers_answering({0, 1})
            first = children(pool.process.pid)
            assert len(first) == 2
            victim = min(first)
            os.kill(victim, signal.SIGKILL)
            # The parent starts a new one in its place, which answers.
            while len(children(pool.process.pid) - first) < 1:
                await trio.lowlevel.checkpoint()
            await pool.workers_answering({0, 1})
            assert b"restarting it" in pool.output
            pool.process.send_signal(signal.SIGTERM)
            assert await pool.process.wait() == 0
            assert b"every worker has stopped" in pool.output


async def test_workers_without_redis_or_with_port_0_are_refused(tmp_path: Path) -> None:
    for arguments, expected in [
        (["--workers", "2", "--port", "8000"], "set backplane.redis_url"),
        (["--workers", "2", "--port", "0", "--redis", "redis://127.0.0.1:1/0"], "--port 8000"),
    ]:
        result = await trio.run_process(
            [sys.executable, "-m", "hub", "serve", *arguments],
            cwd=tmp_path,
            env=environment(),
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert result.returncode == 2
        assert expected in result.stderr.decode()
