"""`hub top`: the terminal view of a snapshot (rich's recording console), and a real hub."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import trio
from rich.console import Console

from hub import client
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig
from hub.services import RoomService
from hub.top import TopError, observer_url, render, watch

TOKEN = "correct-horse-battery-staple"

pytestmark = pytest.mark.timeout(60)


def snapshot() -> dict[str, Any]:
    """A snapshot as the hub sends it: a backend actor restarted once after a crash."""

    def actor(name: str, child_id: str, **fields: Any) -> dict[str, Any]:
        return {
            "id": 0,
            "name": name,
            "child_id": child_id,
            "kind": "worker",
            "state": "running",
            "mailbox": 0,
            "capacity": 64,
            "dropped": 0,
            "restarts": 0,
            "children": [],
            "more": 0,
            **fields,
        }

    sessions = actor(
        "sessions#5",
        "sessions",
        kind="supervisor",
        children=[actor("session#7", "session-1", mailbox=3), actor("session#8", "session-2")],
        more=1199,
    )
    services = actor(
        "services#3",
        "services",
        kind="supervisor",
        children=[actor("flaky#9", "flaky", restarts=2, dropped=4)],
    )
    tree = actor(
        "demo#1",
        "demo",
        kind="supervisor",
        children=[actor("hub#2", "hub", kind="supervisor", children=[services, sessions])],
    )
    return {
        "hub": {
            "name": "demo",
            "version": "0.1.0",
            "uptime": 192.0,
            "connections": 1201,
            "topics": 2,
            "messages_in_rate": 12.5,
            "messages_out_rate": 300.0,
            "interval": 1.0,
        },
        "tree": tree,
        "topics": [
            {
                "name": "room:lobby",
                "route": "room:*",
                "state": "running",
                "members": 1200,
                "rate": 250.5,
                "mailbox": 1,
                "capacity": 4096,
            }
        ],
        "topics_more": 1,
        "connections": [
            {
                "id": "c7",
                "transport": "websocket",
                "remote": "127.0.0.1:5000",
                "observer": False,
                "topics": ["room:lobby"],
                "topic_count": 3,
                "outbox": 17,
                "mailbox": 0,
                "age": 75.0,
            }
        ],
        "connections_more": 1200,
        "crashes": [
            {
                "actor": "flaky#8",
                "supervisor": "services#3",
                "restart": "permanent",
                "at": time.time(),
                "error": "RuntimeError('boom')",
                "traceback": 'Traceback (most recent call last):\n  File "x.py", line 1\n'
                "RuntimeError: boom\n",
            }
        ],
    }


def drawn(payload: dict[str, Any], *, height: int = 60) -> str:
    console = Console(record=True, width=140, file=io.StringIO(), color_system=None)
    console.print(render(payload, height=height))
    return console.export_text()


def test_the_view_draws_the_tree_topics_connections_and_crashes() -> None:
    text = drawn(snapshot())
    lines = text.splitlines()
    assert "triohub 0.1.0 'demo'" in lines[0] and "up 3 min 12 s" in lines[0]
    assert "1201 connections" in lines[0] and "in 12.5/s" in lines[0]
    # The tree, with each actor's mailbox, drops, restarts and state.
    assert any("demo#1 running" in line for line in lines)
    flaky = next(line for line in lines if "flaky#9" in line)
    assert "mailbox 0/64" in flaky and "drops 4" in flaky and "restarts 2" in flaky
    assert any("session#7 running  mailbox 3/64" in line for line in lines)
    assert any("... and 1199 more" in line for line in lines)
    # Topics and connections, and what was left out.
    lobby = next(line for line in lines if "room:lobby" in line and "room:*" in line)
    assert "1200" in lobby and "250.5" in lobby and "1/4096" in lobby
    connection = next(line for line in lines if "c7" in line)
    assert "websocket" in connection and "room:lobby (+2)" in connection
    assert "17" in connection and "1 min 15 s" in connection
    assert "... and 1 more" in text and "... and 1200 more" in text
    # The last crash, with the end of its traceback.
    assert "last crashes (1)" in text
    assert any("flaky#8 under services#3: RuntimeError('boom')" in line for line in lines)
    assert "    RuntimeError: boom" in text


def test_a_short_terminal_gets_fewer_rows() -> None:
    tall, short = drawn(snapshot(), height=80), drawn(snapshot(), height=20)
    assert "session#8" in tall and "... and 1199 more" in tall
    assert "session#8" not in short and "... and 1200 more" in short


def test_an_observer_url_from_what_people_type() -> None:
    assert observer_url("http://127.0.0.1:8000/") == "ws://127.0.0.1:8000/observer/ws"
    assert observer_url("https://hub.example/anything") == "wss://hub.example/observer/ws"
    assert observer_url("127.0.0.1:9000") == "ws://127.0.0.1:9000/observer/ws"
    assert observer_url("ws://[::1]:9000/ws") == "ws://[::1]:9000/observer/ws"
    with pytest.raises(TopError) as error:
        observer_url("ftp://example.com")
    assert error.value.status == 2


async def start(nursery: trio.Nursery, **admin: object) -> HubRuntime:
    app = Hub("watched")
    app.route("room:*", RoomService)
    config = HubConfig.from_settings({"server": {"port": 0}, "admin": admin})
    runtime: HubRuntime = await nursery.start(serve_hub, app, config)
    return runtime


async def test_once_draws_one_snapshot_of_a_real_hub(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery, observer=True, token=TOKEN)
        output = io.StringIO()
        console = Console(file=output, width=140, color_system=None)
        async with client.connect(runtime.websocket_url) as ann:
            await ann.join("room:top", {"user": "ann"})
            await watch(observer_url(runtime.url), TOKEN, console, once=True)
        text = output.getvalue()
        assert "'watched'" in text and "sessions#" in text and "topic room:top#" in text
        assert "(observer)" in text and "no crashes" in text


class _Screen(io.StringIO):
    """A terminal's output that says when `text` has been drawn on it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.drawn = trio.Event()

    def write(self, data: str) -> int:
        written = super().write(data)
        if self.text in self.getvalue():
            self.drawn.set()
        return written


async def test_live_redraws_each_snapshot_until_stopped(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery, observer=True, observer_interval_seconds=0.05)
        screen = _Screen("topic room:late#")
        console = Console(file=screen, width=140, height=60, force_terminal=True)
        watching = trio.CancelScope()
        nursery.start_soon(_watch_in, watching, observer_url(runtime.url), console)
        # A topic started after the first snapshot shows in a later one.
        async with client.connect(runtime.websocket_url) as ann:
            await ann.join("room:late", {"user": "ann"})
            await screen.drawn.wait()
        watching.cancel()


async def _watch_in(scope: trio.CancelScope, url: str, console: Console) -> None:
    with scope:
        await watch(url, None, console)


async def test_watching_reports_a_missing_token_or_observer(nursery: trio.Nursery) -> None:
    with trio.fail_after(30):
        guarded = await start(nursery, observer=True, token=TOKEN)
        console = Console(file=io.StringIO())
        with pytest.raises(TopError) as no_token:
            await watch(observer_url(guarded.url), None, console, once=True)
        assert no_token.value.status == 2 and "admin token" in str(no_token.value)

        unobserved = await start(nursery)
        with pytest.raises(TopError) as no_observer:
            await watch(observer_url(unobserved.url), None, console, once=True)
        assert no_observer.value.status == 1
        assert "hub serve --observer" in str(no_observer.value)


def test_hub_top_says_in_one_line_when_no_hub_answers() -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TRIOHUB_")}
    result = subprocess.run(
        [sys.executable, "-m", "hub", "top", "http://127.0.0.1:9/"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1, result
    (line,) = result.stderr.splitlines()
    assert line.startswith("hub top: cannot reach the hub at ws://127.0.0.1:9/observer/ws")
    assert "hub serve --observer" in line
    assert result.stdout == ""


@pytest.mark.parametrize("attempt", range(5))  # once, SIGINT slipped past a KeyboardInterrupt
def test_ctrl_c_while_connecting_ends_hub_top_quietly(attempt: int) -> None:
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TRIOHUB_")}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(30)
        port = listener.getsockname()[1]
        process = subprocess.Popen(
            [sys.executable, "-m", "hub", "top", f"http://127.0.0.1:{port}/"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environ,
        )
        try:
            # Connected, and waiting for an answer to its WebSocket request:
            # this listener never gives one.
            connection, _address = listener.accept()
            with connection:
                assert connection.recv(4096).startswith(b"GET /observer/ws HTTP/1.1")
                process.send_signal(signal.SIGINT)
                output, errors = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 0  # quitting is what Ctrl+C is for in `hub top`
    assert (output, errors) == ("", "")
