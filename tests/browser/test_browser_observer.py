"""The observer page in headless Chromium, against a real `hub serve` with an admin token.

The page shows the supervision tree as the hub pushes it; when a client
makes the backend actor `flaky` crash, the crash appears with its
traceback and the restart shows on `flaky` and under its supervisor,
without the page asking for anything. The test also takes the screenshot
docs/observer.md shows: into docs/ when HUB_TEST_SCREENSHOT_DIR=docs, else
into the test's temporary directory.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_pages import client_page, run, ws_url
from browser_support import REPO, HubProcess, running_hub
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

TOKEN = "observer-test-token-0123456789"
SCREENSHOT = "observer.png"


@pytest.fixture(scope="module")
def observed_hub() -> Iterator[HubProcess]:
    with running_hub(
        app="tests.browser.observer_app:app",
        environ={
            "TRIOHUB_ADMIN__TOKEN": TOKEN,
            "TRIOHUB_ADMIN__OBSERVER_INTERVAL_SECONDS": "0.5",
            "TRIOHUB_ADMIN__METRICS": "true",
        },
    ) as hub:
        yield hub


def screenshot_path(tmp_path: Path) -> Path:
    directory = os.environ.get("HUB_TEST_SCREENSHOT_DIR")
    if directory:
        return (REPO / directory / SCREENSHOT).resolve()
    return tmp_path / SCREENSHOT


def test_the_page_shows_the_tree_and_a_crash_raises_its_supervisors_restarts(
    observed_hub: HubProcess, new_page: Callable[[], Page], tmp_path: Path
) -> None:
    page = new_page()
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{observed_hub.url}observer/?token={TOKEN}")
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    # The token leaves the address bar once the page has it.
    assert "token" not in page.url

    tree = page.locator("#tree")
    for child in ("hub", "services", "topics", "sessions", "flaky"):
        expect(tree.locator(f'li[data-child-id="{child}"]')).to_have_count(1)
    flaky = tree.locator('li[data-child-id="flaky"]')
    expect(flaky).to_have_attribute("data-state", "running")
    expect(flaky).to_have_attribute("data-restarts", "0")
    services = tree.locator('li[data-child-id="services"] .below').first
    expect(services).to_have_attribute("data-child-restarts", "0")
    expect(page.locator("#no-crashes")).to_be_visible()
    # The page's own connection, on the observer's path.
    expect(page.locator("#connections tbody tr", has_text="(observer)")).to_have_count(1)
    first_flaky = flaky.get_attribute("data-actor")

    # A client, in another page, makes the backend actor crash; nobody reloads.
    client = client_page(observed_hub, new_page)
    run(
        client,
        """
        const hub = await connect(arg.url);
        await hub.join("room:lobby", { user: "ann" });
        const poke = await hub.join("poke:it");
        await poke.call("crash");
        window.hub = hub;
        """,
        url=ws_url(observed_hub),
    )

    crash = page.locator("#crashes li")
    expect(crash).to_have_count(1)
    expect(crash).to_have_attribute("data-actor", first_flaky or "")
    expect(crash.locator("summary")).to_contain_text("RuntimeError('flaky was told to crash')")
    expect(crash.locator("summary")).to_contain_text(re.compile(r"under services#\d+"))
    crash.locator("summary").click()
    traceback = crash.locator("pre.traceback")
    expect(traceback).to_be_visible()
    # Still open after the next snapshots have redrawn the page.
    snapshots = int(page.locator("body").get_attribute("data-snapshots") or 0)
    page.wait_for_function(f"Number(document.body.dataset.snapshots) >= {snapshots + 2}")
    expect(traceback).to_be_visible()
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text("RuntimeError: flaky was told to crash")
    expect(page.locator("#no-crashes")).to_be_hidden()

    # Restarted: a new actor, one restart, and its supervisor counts it.
    expect(flaky).to_have_attribute("data-restarts", "1")
    expect(flaky).to_have_attribute("data-state", "running")
    assert flaky.get_attribute("data-actor") != first_flaky
    expect(services).to_have_attribute("data-child-restarts", "1")
    expect(services).to_have_text("1 restart below")

    # The client's topics and connection show, with their members.
    lobby = page.locator('#topics tr[data-topic="room:lobby"]')
    expect(lobby.locator("td").nth(2)).to_have_text("1")
    expect(page.locator("#connections tbody tr", has_text="room:lobby, poke:it")).to_have_count(1)

    path = screenshot_path(tmp_path)
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_and_metrics_ask_for_the_token(
    observed_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = new_page()
    response = page.goto(f"{observed_hub.url}observer/")
    assert response is not None and response.status == 401
    expect(page.locator("body")).to_contain_text("admin token")

    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{observed_hub.url}metrics", timeout=10)
    assert refused.value.code == 401
    request = urllib.request.Request(
        f"{observed_hub.url}metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as metrics:
        assert b"triohub_connections" in metrics.read()


def test_a_player_on_the_hub_path_cannot_watch(
    observed_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(observed_hub, new_page)
    code = run(
        page,
        """
        const hub = await connect(arg.url);
        const refused = await hub.join("$observer").then(() => "joined", (error) => error.code);
        hub.close();
        return refused;
        """,
        url=ws_url(observed_hub),
    )
    assert code == "forbidden"
