"""The application's hooks on connections and users, and how the hub runs them.

    app = Hub("chat", on_connect=greet, on_disconnect=bye, on_offline=email_digest)

Each hook may be a plain function or a coroutine function:

- `on_connect(connection)`: a client has connected and been authenticated;
  before any of its frames is read. It may fill `connection.data` (which
  services see as `member.data`) and may refuse the client by raising
  `hub.errors.ConnectRefusedError` (the client is closed with its code).
- `on_disconnect(connection, code, reason)`: the connection has ended, with
  its close code and reason; called once for every connection whose
  `on_connect` returned (not when the hub is cancelled outright).
- `on_offline(offline)`: a user's last connection ended, and the offline
  grace period passed without a new one (`hub.users`).

The hub runs each hook bounded by `users.hook_timeout_seconds` and
contained: a hook that raises or runs too long is logged once, with its
traceback, and counted (`triohub_hook_failures{hook}`); the hub carries on.
An `on_connect` that fails so closes its connection with 1011, since the
application could not decide about it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import trio

from hub.errors import ConnectRefusedError

if TYPE_CHECKING:
    from hub.connections import Connection
    from hub.metrics import HubMetrics
    from hub.users import UserOffline

__all__ = [
    "APP_HOOK_TIMEOUT_SECONDS",
    "ConnectHook",
    "DisconnectHook",
    "OfflineHook",
    "run_hook",
]

logger = logging.getLogger(__name__)

# How long an application hook may run (`users.hook_timeout_seconds`).
APP_HOOK_TIMEOUT_SECONDS: Final = 5.0

ConnectHook = Callable[["Connection"], Awaitable[None] | None]
DisconnectHook = Callable[["Connection", int | None, str], Awaitable[None] | None]
OfflineHook = Callable[["UserOffline"], Awaitable[None] | None]


async def run_hook(
    name: str,
    hook: Callable[..., Any],
    *args: Any,
    timeout: float,
    metrics: HubMetrics | None = None,
) -> bool:
    """Run the application's hook `name` as `hook(*args)`; return whether it returned in time.

    ConnectRefusedError (an `on_connect` refusing) passes through; any other
    exception, and running past `timeout`, is logged and counted, and
    returns False. Cancellation from outside passes through, as always.
    """
    with trio.move_on_after(timeout) as waited:
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except ConnectRefusedError:
            raise
        except Exception:
            logger.exception("the application's %s hook raised", name)
            _count(metrics, name)
            return False
        return True
    assert waited.cancelled_caught
    logger.error("the application's %s hook did not return within %s s", name, timeout)
    _count(metrics, name)
    return False


def _count(metrics: HubMetrics | None, name: str) -> None:
    if metrics is not None:
        metrics.hook_failures.labels(hook=name).inc()
