"""`hub notify` and `hub where` against a real hub, and a real client's inbox.

The commands run in a thread (`hub.cli.main`, as the `hub` script runs it)
and talk to the hub's admin endpoints over HTTP; the notification
reaches a WebSocket client joined to its personal topic, and waits in the
inbox for one that is not.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping

import attrs
import pytest
import trio
from running_hub import RunningHub, StartHub
from wire_support import http_get

from hub.app import Hub
from hub.cli import main
from hub.gateway import ConnectRequest

TOKEN = "a-token-of-sixteen-characters"


def user_from_query(request: ConnectRequest) -> str | None:
    return request.query.get("user")


def app() -> Hub:
    return Hub("notify", authenticate=user_from_query)


@attrs.frozen
class Ran:
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture
def run_hub(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Awaitable[Ran]]:
    """Run `hub ARGS...` in a thread; its exit status and output."""
    for name in list(os.environ):
        if name.startswith("TRIOHUB_"):
            monkeypatch.delenv(name)

    async def run(*args: str, environment: Mapping[str, str] | None = None) -> Ran:
        with monkeypatch.context() as patch:
            for name, value in (environment or {}).items():
                patch.setenv(name, value)
            capsys.readouterr()
            status = await trio.to_thread.run_sync(main, list(args))
            out, err = capsys.readouterr()
        return Ran(status, out.encode(), err.encode())

    return run


async def test_hub_notify_reaches_a_joined_device_and_waits_for_the_next(
    start_hub: StartHub, run_hub: Callable[..., Awaitable[Ran]]
) -> None:
    running: RunningHub = await start_hub(app())
    url = running.runtime.url
    with trio.fail_after(30):
        async with running.client(query="user=ada") as phone:
            await phone.join_ok("user:ada")
            done = await run_hub("notify", "ada", "invite", '{"room": "chess:7"}', "--url", url)
            assert done.returncode == 0, done.stderr
            assert b"notified 'ada' of 'invite'" in done.stdout
            assert b"1 connection now" in done.stdout
            push = await phone.next_push("user:ada")
            assert (push.event, push.payload) == ("invite", {"room": "chess:7"})
            offset = push.offset

            where = await run_hub("where", "ada", "--url", url)
            assert where.returncode == 0, where.stderr
            answer = json.loads(where.stdout)
            assert answer["online"] is True
            [connection] = answer["connections"]
            assert connection["transport"] == "websocket"
            assert connection["topics"] == ["user:ada"]
            assert connection["address"].startswith("127.0.0.1:")

        # Not acknowledged: the next device gets it again.
        async with running.client(query="user=ada") as laptop:
            reply = await laptop.join_ok("user:ada")
            assert reply.payload["unread"] == 1
            again = await laptop.next_push("user:ada")
            assert (again.event, again.offset) == ("invite", offset)
            answer = await laptop.call("user:ada", "ack", {"offset": offset})
            assert answer.ok and answer.payload["unread"] == 0


async def test_hub_notify_says_what_is_wrong(
    start_hub: StartHub, run_hub: Callable[..., Awaitable[Ran]]
) -> None:
    running = await start_hub(app())
    url = running.runtime.url
    with trio.fail_after(30):
        bad_json = await run_hub("notify", "ada", "invite", "{nope", "--url", url)
        assert bad_json.returncode == 2 and b"not valid JSON" in bad_json.stderr
        reserved = await run_hub("notify", "ada", "$unread", "--url", url)
        assert reserved.returncode == 1
        assert b"refused (400)" in reserved.stderr and b"'$'" in reserved.stderr
        nobody = await run_hub("notify", "ada", "x", "--url", "http://127.0.0.1:9/")
        assert nobody.returncode == 1 and b"cannot reach the hub" in nobody.stderr


async def test_with_an_admin_token_the_endpoints_ask_for_it(
    start_hub: StartHub, run_hub: Callable[..., Awaitable[Ran]]
) -> None:
    running = await start_hub(app(), admin={"token": TOKEN})
    url = running.runtime.url
    with trio.fail_after(30):
        refused = await run_hub("notify", "ada", "x", "--url", url)
        assert refused.returncode == 1 and b"admin token" in refused.stderr
        response = await http_get(running.port, "/admin/users/ada")
        assert response.status == 401
        accepted = await run_hub(
            "notify", "ada", "x", "--url", url, environment={"TRIOHUB_ADMIN__TOKEN": TOKEN}
        )
        assert accepted.returncode == 0, accepted.stderr
        [waiting] = await running.runtime.notifications.inbox.pending("ada")
        assert waiting.event == "x"


async def test_a_client_of_another_user_is_refused_its_personal_topic(
    start_hub: StartHub,
) -> None:
    running = await start_hub(app())
    with trio.fail_after(30):
        async with running.client(query="user=eve") as eve:
            reply = await eve.join("user:ada")
            assert not reply.ok and reply.error_code == "forbidden"
