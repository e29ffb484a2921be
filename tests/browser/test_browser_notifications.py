"""Notifications in headless Chromium: the JS client's Inbox on two devices of one user.

A notification sent while the user is offline comes when a page opens its
inbox; one sent while two pages are open reaches both; an ack on one page
clears it on the other. The notifications are sent through the hub's admin
endpoint, as `hub notify` sends them.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_pages import client_page, run, ws_url
from browser_support import HubProcess, running_hub
from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(60)]

OPEN_INBOX = """
const { Inbox } = window.triohub;
window.hub = await connect(arg.url, { params: { user: arg.user } });
window.inbox = await window.hub.inbox(arg.user);
window.unreadEvents = [];
window.inbox.on("unread", (status) => window.unreadEvents.push(status));
return window.inbox instanceof Inbox;
"""


@pytest.fixture
def notify_hub() -> Iterator[HubProcess]:
    with running_hub(app="tests.browser.notify_app:app") as hub:
        yield hub


def notify(hub: HubProcess, user: str, event: str, data: Any) -> dict[str, Any]:
    body = json.dumps({"user": user, "event": event, "data": data}).encode()
    request = urllib.request.Request(
        hub.url + "admin/notify", data=body, headers={"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def held(page: Page) -> list[dict[str, Any]]:
    notifications: list[dict[str, Any]] = page.evaluate(
        "() => [...window.inbox.notifications.values()]"
    )
    return notifications


def test_an_ack_on_one_page_clears_the_notification_on_the_other(
    notify_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    offline = notify(notify_hub, "ada", "invite", {"room": "chess:7"})

    phone = client_page(notify_hub, new_page)
    assert run(phone, OPEN_INBOX, url=ws_url(notify_hub), user="ada") is True
    phone.wait_for_function("() => window.inbox.unread === 1")
    assert held(phone) == [
        {"event": "invite", "data": {"room": "chess:7"}, "offset": offset}
        for offset in [offline["offset"]]
    ]

    laptop = client_page(notify_hub, new_page)
    run(laptop, OPEN_INBOX, url=ws_url(notify_hub), user="ada")
    laptop.wait_for_function("() => window.inbox.unread === 1")

    online = notify(notify_hub, "ada", "message", {"text": "hi"})
    assert online["devices"] == 2
    for page in (phone, laptop):
        page.wait_for_function("() => window.inbox.unread === 2")
        assert [n["event"] for n in held(page)] == ["invite", "message"]

    status = run(phone, "return await window.inbox.ack();")
    assert status["unread"] == 0 and status["acked"] == online["offset"]
    laptop.wait_for_function("() => window.inbox.unread === 0")
    last = laptop.evaluate("() => window.unreadEvents.at(-1)")
    assert last == {"unread": 0, "dropped": 0, "acked": online["offset"]}


def test_another_user_cannot_open_someone_elses_inbox(
    notify_hub: HubProcess, new_page: Callable[[], Page]
) -> None:
    page = client_page(notify_hub, new_page)
    code = run(
        page,
        """
        const hub = await connect(arg.url, { params: { user: "eve" } });
        const code = await hub.inbox("ada").then(() => "opened", (err) => err.code);
        hub.close();
        return code;
        """,
        url=ws_url(notify_hub),
    )
    assert code == "forbidden"
