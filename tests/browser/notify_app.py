"""A hub whose clients say who they are in the URL (`?user=ada`): for testing personal topics.

hub serve tests.browser.notify_app:app
"""

from __future__ import annotations

from hub import Hub
from hub.gateway import ConnectRequest


def user_from_query(request: ConnectRequest) -> str | None:
    """The client's user, from its connect request's query (a test's stand-in for a token)."""
    return request.query.get("user")


app = Hub("notify test", authenticate=user_from_query)
