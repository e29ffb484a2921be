"""A hub node killed outright (SIGKILL): real `hub serve` processes on one real Valkey.

With a lease of 2 s renewed every 0.5 s, the surviving node notices within
2.5 s (docs/deployment.md#ownership); the test waits on what the client is
told, bounded by `fail_after`, never on the clock.
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
from pathlib import Path

import pytest
import trio
from hub_support import open_client
from valkey_support import ValkeyServer
from wire_support import http_get

from hub.protocol import Ended, Push

APP = """
from hub.app import Hub
from hub.services import RoomService

app = Hub("rooms")
app.route("room:*", RoomService)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("TRIOHUB_")}
    env["TRIOHUB_BACKPLANE__LEASE_SECONDS"] = "2"
    env["TRIOHUB_BACKPLANE__HEARTBEAT_SECONDS"] = "0.5"
    return env


def redis_get(server: ValkeyServer, key: str) -> bytes | None:
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(f"GET {key}\r\n".encode())
        reply = conn.recv(4096)
    if reply.startswith(b"$-1"):
        return None
    return reply.split(b"\r\n")[1]


@contextlib.asynccontextmanager
async def hub_process(
    tmp_path: Path, redis_url: str, app: str = APP
) -> AsyncIterator[tuple[trio.Process, int]]:
    """A `hub serve` of `app` (the source of a module defining `app`) on `redis_url`."""
    (tmp_path / "rooms_app.py").write_text(textwrap.dedent(app))
    port = free_port()
    log = tmp_path / f"hub-{port}.log"
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "hub",
            "serve",
            "rooms_app:app",
            "--port",
            str(port),
            "--redis",
            redis_url,
        ],
        cwd=tmp_path,
        env=environment(),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        while True:  # until it answers
            try:
                response = await http_get(port, "/healthz")
            except OSError:
                continue  # still starting: each try is a round trip of its own
            if json.loads(response.body)["backplane"]["connected"]:
                break
        yield process, port
    except BaseException:
        print(f"--- hub on port {port}:\n{log.read_text()}")  # what the hub said, for the failure
        raise
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()


def is_push(topic: str, event: str):  # type: ignore[no-untyped-def]
    return lambda frame: isinstance(frame, Push) and frame.topic == topic and frame.event == event


@pytest.mark.timeout(120)
async def test_a_killed_node_loses_its_members_and_its_topics_are_taken_over(
    tmp_path: Path, valkey_server: ValkeyServer
) -> None:
    valkey_server.flush()
    with trio.fail_after(90):
        async with (
            hub_process(tmp_path, valkey_server.url) as (victim, victim_port),
            hub_process(tmp_path, valkey_server.url) as (_survivor, port),
            open_client(f"ws://127.0.0.1:{victim_port}/ws", "json") as ann,
            open_client(f"ws://127.0.0.1:{port}/ws", "msgpack") as bob,
        ):
            # room:a runs on the victim (ann joined first); room:b on the survivor.
            await ann.join_ok("room:a", {"user": "ann"})
            await bob.join_ok("room:b", {"user": "bob", "$presence": {}})
            await ann.join_ok("room:b", {"user": "ann"})
            joined = await bob.join_ok("room:a", {"user": "bob"})
            victim_node = redis_get(valkey_server, "triohub:owner:room:a")
            assert victim_node is not None
            assert redis_get(valkey_server, "triohub:owner:room:b") not in (None, victim_node)
            await bob.wait_for(
                lambda frame: (
                    is_push("room:b", "$presence_diff")(frame) and "ann" in frame.payload["joins"]
                )
            )
            for n in range(5):
                await ann.publish("room:a", "message", {"text": str(n)})
            last = None
            for _ in range(5):
                last = await bob.wait_for(is_push("room:a", "message"))
            assert last is not None and last.offset is not None
            epoch = joined.payload["epoch"]  # type: ignore[index]

            victim.send_signal(signal.SIGKILL)

            # Its member leaves the survivor's topic, with a diff to everyone there.
            diff = await bob.wait_for(
                lambda frame: (
                    is_push("room:b", "$presence_diff")(frame) and "ann" in frame.payload["leaves"]
                )
            )
            assert "ann" not in diff.payload["joins"]
            state = await bob.call("room:b", "$presence")
            assert sorted(state.payload) == ["bob"]  # type: ignore[arg-type]
            # The topic it ran ended for bob, as a crashed topic does.
            ended = await bob.wait_for(
                lambda frame: isinstance(frame, Ended) and frame.topic == "room:a"
            )
            assert ended.code == "topic_crashed"
            # Bob's rejoin takes the topic over on the survivor; its history goes on.
            rejoined = await bob.join_ok("room:a", {"user": "bob"}, offset=last.offset)
            assert rejoined.payload["epoch"] == epoch  # type: ignore[index]
            assert rejoined.payload["offset"] == last.offset  # type: ignore[index]
            assert redis_get(valkey_server, "triohub:owner:room:a") not in (None, victim_node)
            await bob.publish("room:a", "message", {"text": "after"})
            after = await bob.wait_for(is_push("room:a", "message"))
            assert after.payload["text"] == "after"  # type: ignore[index]
            assert after.offset == last.offset + 1
