"""The JS client with signed tokens, in headless Chromium against a real `hub serve`.

The hub has a secret; the page gets tokens minted here (as an application's
server would mint them) through a `token` function, and the client refreshes
in-band when the hub says the token expires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from browser_pages import client_page, run, ws_url
from browser_support import HubProcess, running_hub
from playwright.sync_api import Page

from hub.tokens import TokenVerifier

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

SECRET = "a-browser-test-secret-long-enough-0123456789"
TOKENS = TokenVerifier(SECRET)


@pytest.fixture(scope="module")
def auth_hub() -> Iterator[HubProcess]:
    environ = {
        "TRIOHUB_AUTH__SECRET": SECRET,
        "TRIOHUB_AUTH__LEEWAY_SECONDS": "0",
        "TRIOHUB_AUTH__REFRESH_LEAD_SECONDS": "60",
    }
    with running_hub(environ=environ) as hub:
        yield hub


@pytest.fixture
def page(auth_hub: HubProcess, new_page: Callable[[], Page]) -> Page:
    return client_page(auth_hub, new_page)


def test_a_token_function_connects_and_refreshes_when_told(
    page: Page, auth_hub: HubProcess
) -> None:
    # The first token lasts 2 s, inside the 60 s lead: the hub says so at
    # once, and the client asks the function again and refreshes in-band.
    tokens = [TOKENS.mint("ann", ttl=2), TOKENS.mint("ann", ttl=600)]
    result = run(
        page,
        """
        const tokens = arg.tokens.slice();
        let asked = 0;
        const token = async () => {
          asked += 1;
          return tokens.shift();
        };
        const hub = new TrioHub(arg.url, { token });
        const events = [];
        const refreshed = new Promise((resolve) => {
          hub.on("expiring", ({ expiresInMs }) => events.push(["expiring", expiresInMs <= 2000]));
          hub.on("refreshed", (info) => {
            events.push(["refreshed", info.expiresInMs > 590000]);
            resolve();
          });
          hub.on("error", (err) => { events.push(["error", err.code]); resolve(); });
        });
        await hub.open();
        const topic = await hub.join("echo:auth");
        await refreshed;
        const answer = await topic.call("still", "here");
        hub.close();
        return { events, asked, answer };
        """,
        url=ws_url(auth_hub),
        tokens=tokens,
    )
    assert result == {
        "events": [["expiring", True], ["refreshed", True]],
        "asked": 2,
        "answer": "here",
    }


def test_a_token_left_to_run_out_closes_1008_and_a_fixed_token_stays_closed(
    page: Page, auth_hub: HubProcess
) -> None:
    result = run(
        page,
        """
        const hub = await connect(arg.url, { token: arg.token });
        const closed = new Promise((resolve) => hub.on("close", resolve));
        const { code, reason, reconnectInMs } = await closed;
        return { code, reason, reconnectInMs, state: hub.state };
        """,
        url=ws_url(auth_hub),
        token=TOKENS.mint("ann", ttl=1),
    )
    assert result == {
        "code": 1008,
        "reason": "token expired",
        "reconnectInMs": None,
        "state": "closed",
    }


def test_a_forged_token_is_refused(page: Page, auth_hub: HubProcess) -> None:
    result = run(
        page,
        """
        return await connect(arg.url, { token: arg.token, reconnect: false }).then(
          () => "connected", (err) => err.code);
        """,
        url=ws_url(auth_hub),
        token=TokenVerifier("x" * 40).mint("ann", ttl=600),
    )
    assert result == "connect_failed"
