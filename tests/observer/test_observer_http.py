"""The observer on a real port: its page, its WebSocket, and the admin token before them."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio
from wire_support import RawResponse, parse_head, request_until_eof

from hub import client
from hub.app import Hub, HubRuntime, serve_hub
from hub.config import HubConfig
from hub.observer import OBSERVER_TOPIC
from hub.services import RoomService

TOKEN = "correct-horse-battery-staple"

pytestmark = pytest.mark.timeout(60)


async def get(port: int, path: str, headers: Mapping[str, str] | None = None) -> RawResponse:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    raw = await request_until_eof(port, ("\r\n".join(lines) + "\r\n\r\n").encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    status, response_headers = parse_head(head)
    return RawResponse(status, response_headers, body)


async def start(nursery: trio.Nursery, **admin: object) -> HubRuntime:
    app = Hub("http observed")
    app.route("room:*", RoomService)
    config = HubConfig.from_settings({"server": {"port": 0}, "admin": admin})
    runtime: HubRuntime = await nursery.start(serve_hub, app, config)
    return runtime


def port_of(runtime: HubRuntime) -> int:
    assert runtime.gateway is not None
    return runtime.gateway.port


async def test_off_by_default_there_is_no_page_and_no_observer_socket(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery)
        port = port_of(runtime)
        assert (await get(port, "/observer/")).status == 404
        assert (await get(port, "/observer/static/observer.js")).status == 404
        assert (await get(port, "/metrics")).status == 404  # served only where asked for
        with pytest.raises(client.ConnectError) as rejected:
            async with client.connect(f"ws://127.0.0.1:{port}/observer/ws"):
                pass
        assert rejected.value.status == 404


async def test_turned_on_without_a_token_the_page_and_the_socket_are_open(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery, observer=True)
        port = port_of(runtime)
        page = await get(port, "/observer/")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        assert b'src="static/observer.js"' in page.body
        assert (await get(port, "/observer/static/observer.js")).status == 200
        assert (await get(port, "/observer/static/observer.css")).status == 200
        redirect = await get(port, "/observer?token=x")
        assert (redirect.status, redirect.headers["location"]) == (308, "/observer/?token=x")
        async with client.connect(f"ws://127.0.0.1:{port}/observer/ws") as watcher:
            channel = await watcher.join(OBSERVER_TOPIC)
            async for push in channel:
                assert push.event == "snapshot"
                assert isinstance(push.payload, Mapping)
                assert push.payload["hub"]["name"] == "http observed"
                break


async def test_with_a_token_metrics_the_page_and_the_socket_ask_for_it(
    nursery: trio.Nursery,
) -> None:
    with trio.fail_after(30):
        runtime = await start(nursery, observer=True, token=TOKEN, metrics=True)
        port = port_of(runtime)
        for path in ("/metrics", "/observer/"):
            refused = await get(port, path)
            assert refused.status == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert b"admin token" in refused.body
            wrong = await get(port, path, {"Authorization": "Bearer not-the-token-at-all"})
            assert wrong.status == 401
            assert (await get(port, path, {"Authorization": f"Bearer {TOKEN}"})).status == 200
            assert (await get(port, f"{path}?token={TOKEN}")).status == 200
        # The page's script holds no data and needs no token.
        assert (await get(port, "/observer/static/observer.js")).status == 200

        url = f"ws://127.0.0.1:{port}/observer/ws"
        with pytest.raises(client.ConnectError) as rejected:
            async with client.connect(url):
                pass
        assert rejected.value.status == 401
        async with client.connect(url, query={"token": TOKEN}) as watcher:
            assert (await watcher.join(OBSERVER_TOPIC)).join_reply["interval"] == 1.0
        async with client.connect(url, headers={"authorization": f"Bearer {TOKEN}"}) as watcher:
            await watcher.join(OBSERVER_TOPIC)
        # The hub protocol's own path is the application's, as before.
        async with client.connect(runtime.websocket_url) as player:
            await player.join("room:x", {"user": "ann"})
            with pytest.raises(client.ReplyError) as forbidden:
                await player.join(OBSERVER_TOPIC)
            assert forbidden.value.code == "forbidden"


async def test_the_application_still_authenticates_its_own_clients(
    nursery: trio.Nursery,
) -> None:
    from hub.gateway import AuthenticationError

    async def authenticate(request: object) -> str:
        query = getattr(request, "query", {})
        if query.get("user") != "ann":
            raise AuthenticationError("who are you?")
        return "ann"

    app = Hub("authenticated", authenticate=authenticate, observer=True)
    app.route("room:*", RoomService)
    config = HubConfig.from_settings({"server": {"port": 0}, "admin": {"token": TOKEN}})
    with trio.fail_after(30):
        runtime: HubRuntime = await nursery.start(serve_hub, app, config)
        with pytest.raises(client.ConnectError) as rejected:
            async with client.connect(runtime.websocket_url):
                pass
        assert rejected.value.status == 401
        async with client.connect(runtime.websocket_url, query={"user": "ann"}) as ann:
            await ann.join("room:x", {"user": "ann"})
        # The admin token opens the observer's path, not the application's.
        with pytest.raises(client.ConnectError):
            async with client.connect(runtime.websocket_url, query={"token": TOKEN}):
                pass
