"""The users registry: each user's live connections, and who has gone for good.

A user is what `hub.identity.user_of` says a connection speaks for;
anonymous connections (and the observer's) are not in it. For each user
online it knows the live connections: `where(user)` says on which
transports, from where, since when and in which topics. `disconnect(user)`
ends them all.

When a user's last connection ends, the user is *leaving* for
`users.offline_grace_seconds`: a connection within it (a page reload, a
phone changing networks) carries on as if none had ended. When the grace
period passes with none, the user is offline, and the application's
`on_offline` hook is called once for that absence, with the notifications
still unacknowledged in the user's inbox (`hub.notifications`). A user
still in the grace period when the hub stops is not reported.

It is not an actor: every change is a synchronous update of plain maps,
made by the sessions' readers as clients come and go. One task
(`serve`) waits for the earliest grace period to end and starts the hooks,
a bounded number at a time.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from hub.hooks import APP_HOOK_TIMEOUT_SECONDS, OfflineHook, run_hook
from hub.protocol import CloseCode

if TYPE_CHECKING:
    from hub.app import HubRuntime
    from hub.connections import Connection
    from hub.metrics import HubMetrics
    from hub.notifications import Notification, Notifications

__all__ = [
    "DISCONNECT_REASON",
    "OFFLINE_GRACE_SECONDS",
    "UserOffline",
    "Users",
    "Whereabouts",
]

# How long after a user's last connection ends before the user is offline.
OFFLINE_GRACE_SECONDS: Final = 30.0

# `on_offline` hooks running at once; the others wait for one to end.
MAX_OFFLINE_HOOKS_RUNNING: Final = 16

#: The close reason of `Users.disconnect` unless another is given.
DISCONNECT_REASON: Final = "disconnected by the server"


@attrs.frozen
class Whereabouts:
    """One of a user's connections, as `Users.where` reports it."""

    #: The connection's id (`member.id` in services).
    id: str
    #: `websocket`, `memory`, ...
    transport: str
    #: The client's `host:port`, None when unknown.
    address: str | None
    #: When it connected, by the wall clock (`time.time()`).
    connected_at: float
    #: The topics it has joined or is joining.
    topics: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "transport": self.transport,
            "address": self.address,
            "connected_at": self.connected_at,
            "topics": list(self.topics),
        }


@attrs.frozen(eq=False)
class UserOffline:
    """What `on_offline` is told: a user has been gone past the grace period."""

    user: str
    #: When the user's last connection ended, by the wall clock (`time.time()`).
    last_seen: float
    #: The notifications the user has not acknowledged, oldest first.
    unacknowledged: tuple[Notification, ...]
    #: Notifications the user's inbox dropped (its limits) since the user last acknowledged.
    dropped: int
    #: The running hub: notify, publish, reach backend actors from the hook.
    hub: HubRuntime = attrs.field(repr=False)


@attrs.define(eq=False, slots=True)
class _Leaving:
    """A user whose last connection ended: offline at `deadline` (trio's clock) unless back."""

    deadline: float
    #: When the last connection ended, by the wall clock.
    last_seen: float


@attrs.define(eq=False)
class Users:
    """Who is connected, where; who is leaving; who has gone (see the module docstring)."""

    #: The offline grace period, in seconds.
    grace: float = OFFLINE_GRACE_SECONDS
    on_offline: OfflineHook | None = None
    hook_timeout: float = APP_HOOK_TIMEOUT_SECONDS
    #: The inboxes, for what a user going offline left unacknowledged.
    notifications: Notifications | None = None
    metrics: HubMetrics | None = None
    #: The running hub, for the hook (set by `serve_hub`).
    hub: HubRuntime | None = None
    # User -> connection id -> connection, for every user online.
    _online: dict[str, dict[str, Connection]] = attrs.Factory(dict)
    # Users whose grace period runs.
    _leaving: dict[str, _Leaving] = attrs.Factory(dict)
    # (deadline, tie-breaker, user), earliest first; an entry whose user came
    # back, or left again later, is skipped when it comes up.
    _deadlines: list[tuple[float, int, str]] = attrs.Factory(list)
    _sequence: Iterator[int] = attrs.Factory(itertools.count)
    _wakeup: trio.Event = attrs.Factory(trio.Event)

    # --- what the hub tells it ---------------------------------------------------

    def connected(self, connection: Connection) -> None:
        """Count `connection` as one of its user's (after `on_connect` accepted it)."""
        user = connection.user
        if user is None or connection.observer:
            return
        # Back within the grace period: never offline.
        self._leaving.pop(user, None)
        self._online.setdefault(user, {})[connection.id] = connection

    def disconnected(self, connection: Connection) -> None:
        """Forget `connection`; the user's last one starts the grace period."""
        user = connection.user
        connections = self._online.get(user) if user is not None else None
        if user is None or connections is None or connections.pop(connection.id, None) is None:
            return
        if connections:
            return
        del self._online[user]
        deadline = trio.current_time() + self.grace
        self._leaving[user] = _Leaving(deadline, time.time())
        heapq.heappush(self._deadlines, (deadline, next(self._sequence), user))
        self._wakeup.set()

    # --- what applications ask ---------------------------------------------------

    def online(self, user: str) -> bool:
        """Whether `user` has a connection now (one in the grace period has none)."""
        return user in self._online

    def leaving(self, user: str) -> bool:
        """Whether `user`'s last connection ended and the grace period still runs."""
        return user in self._leaving

    def count(self) -> int:
        """Users online now."""
        return len(self._online)

    def connections_of(self, user: str) -> tuple[Connection, ...]:
        """`user`'s live connections, oldest first."""
        return tuple(self._online.get(user, {}).values())

    def where(self, user: str) -> tuple[Whereabouts, ...]:
        """Where `user` is connected: each live connection, oldest first (none: offline)."""
        return tuple(
            Whereabouts(
                connection.id,
                connection.transport,
                connection.address,
                connection.connected_at,
                connection.topics,
            )
            for connection in self.connections_of(user)
        )

    def disconnect(
        self, user: str, code: int = CloseCode.POLICY_VIOLATION, reason: str = DISCONNECT_REASON
    ) -> int:
        """End every connection of `user` with Close `code` and `reason`; return how many.

        1008 by default: the hub's clients do not reconnect on their own
        after it. Each connection's `on_disconnect` hook is called as it ends.
        """
        connections = self.connections_of(user)
        for connection in connections:
            connection.close(code, reason)
        return len(connections)

    # --- the grace periods -------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Report each user whose grace period ends, until cancelled (with the hub)."""
        limiter = trio.CapacityLimiter(MAX_OFFLINE_HOOKS_RUNNING)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                while self._deadlines and self._deadlines[0][0] <= now:
                    _deadline, _tie, user = heapq.heappop(self._deadlines)
                    leaving = self._leaving.get(user)
                    if leaving is None or leaving.deadline > now:
                        continue  # back since, or left again later: a later entry is its
                    del self._leaving[user]
                    nursery.start_soon(self._report, user, leaving, limiter)
                self._wakeup = trio.Event()
                deadline = self._deadlines[0][0] if self._deadlines else math.inf
                with trio.move_on_at(deadline):
                    await self._wakeup.wait()

    async def _report(self, user: str, leaving: _Leaving, limiter: trio.CapacityLimiter) -> None:
        """Tell the application that `user` is offline: exactly once for this absence."""
        if self.metrics is not None:
            self.metrics.users_offline.inc()
        if self.on_offline is None:
            return
        async with limiter:
            unacknowledged: tuple[Notification, ...] = ()
            dropped = 0
            if self.notifications is not None:
                unacknowledged, dropped = await self.notifications.unacknowledged(user)
            assert self.hub is not None, "Users.hub is set by serve_hub"
            offline = UserOffline(user, leaving.last_seen, unacknowledged, dropped, self.hub)
            await run_hook(
                "on_offline",
                self.on_offline,
                offline,
                timeout=self.hook_timeout,
                metrics=self.metrics,
            )
