"""`hub publish` reaching a page in headless Chromium, through the hub's Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from browser_pages import client_page, run, ws_url
from browser_support import running_hub
from playwright.sync_api import Page
from valkey_support import ValkeyServer

from hub.cli import main

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

JOIN = """
const hub = await TrioHub.connect(arg.url);
window.got = [];
const topic = await hub.join("room:news", { user: "ann" });
topic.on("headline", (payload, offset, event) => window.got.push({ payload, offset, event }));
return true;
"""


def test_hub_publish_reaches_a_page_through_redis(
    valkey_server: ValkeyServer,
    new_page: Callable[[], Page],
    capsys: pytest.CaptureFixture[str],
) -> None:
    valkey_server.flush()
    with running_hub(arguments=["--redis", valkey_server.url]) as hub:
        page = client_page(hub, new_page)
        assert run(page, JOIN, url=ws_url(hub)) is True
        capsys.readouterr()
        status = main(
            ["publish", "room:news", "headline", '{"text": "hi"}', "--redis", valkey_server.url]
        )
        out, err = capsys.readouterr()
        assert status == 0, err
        assert "published 'headline' to 'room:news': offset" in out
        offset = int(out.rsplit("offset", 1)[1])
        page.wait_for_function("() => window.got.length === 1")
        got = page.evaluate("() => window.got")
        assert got == [{"payload": {"text": "hi"}, "offset": offset, "event": "headline"}]
