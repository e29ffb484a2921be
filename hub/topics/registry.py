"""The live topics: finding a topic's actor, starting it on first use."""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

import attrs
import trio

import actors
from hub.backplane import Backplane, LocalBackplane
from hub.errors import TopicExistsError, TopicLimitError, TopicUnavailableError
from hub.protocol import Payload
from hub.topics.actor import (
    TOPIC_MAILBOX_CAPACITY,
    TopicActor,
    TopicLifecycle,
    TopicSettings,
    topic_name_key,
)
from hub.topics.crashes import CrashLedger
from hub.topics.routes import Route

if TYPE_CHECKING:
    from hub.cluster import ClusterNode
    from hub.metrics import HubMetrics
    from hub.topics.hub_api import HubServices

# How long a topic's service may take to start (its `started` hook) before
# the join that started it fails.
TOPIC_START_TIMEOUT_SECONDS: Final = 10.0

# How many topic names' routes are remembered at most (see `Topics.route_for`).
_ROUTES_REMEMBERED: Final = 4096

# Most topics live at once in one hub.
MAX_LIVE_TOPICS: Final = 10_000


@attrs.define(eq=False)
class Topics:
    """Finds the actor of a topic, starting it on first use.

    Shared by every connection of one hub; it is not an actor because it owns
    no state that needs one writer: the registry holds who serves a topic, and
    a start in progress is awaited rather than repeated.
    """

    routes: tuple[Route, ...]
    registry: actors.Registry
    #: The topics supervisor now (a new one if it was restarted).
    supervisor_of: Callable[[], actors.Supervisor]
    backplane: Backplane = attrs.Factory(LocalBackplane)
    metrics: HubMetrics | None = None
    #: What services reach of the hub beyond their topic (`topic.hub`).
    hub: HubServices | None = None
    settings: TopicSettings = attrs.Factory(TopicSettings)
    #: Requests queued for one topic actor (see TOPIC_MAILBOX_CAPACITY).
    mailbox_capacity: int = TOPIC_MAILBOX_CAPACITY
    start_timeout: float = TOPIC_START_TIMEOUT_SECONDS
    #: Most topics live at once, hub-wide; a join that would start one more
    #: is refused (`topic_limit`).
    max_live: int = MAX_LIVE_TOPICS
    crashes: CrashLedger = attrs.Factory(CrashLedger)
    #: Where joins that must first start their topic run (the hub's nursery).
    nursery: trio.Nursery | None = None
    #: Told of each topic's start and end (the hub's log).
    lifecycle: TopicLifecycle | None = None
    #: This node in a cluster of hubs (None on the in-process backplane): a
    #: topic starts where its lease is taken, and elsewhere a relay stands in.
    cluster: ClusterNode | None = None
    _starting: dict[str, trio.Event] = attrs.Factory(dict)
    #: The route of each topic name looked up lately: every Publish and
    #: Call looks its topic's route up again, for its permission.
    _route_of: dict[str, Route | None] = attrs.Factory(dict)

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run `async_fn(*args)` in the hub's nursery (a join waiting for its topic to start)."""
        assert self.nursery is not None, "Topics.nursery is set by serve_hub"
        self.nursery.start_soon(async_fn, *args)

    def route_for(self, name: str) -> Route | None:
        """The first route matching `name`, in declaration order."""
        routes = self._route_of
        try:
            return routes[name]
        except KeyError:
            pass
        found = next((route for route in self.routes if route.matches(name)), None)
        if len(routes) >= _ROUTES_REMEMBERED:
            routes.clear()  # names clients made up must not grow it: start again
        routes[name] = found
        return found

    def whereis(self, name: str) -> actors.ActorRef | None:
        """The live actor of topic `name`, or None if it is not running."""
        return self.registry.whereis(topic_name_key(name))

    async def started(self, name: str) -> actors.ActorRef | None:
        """The live actor of topic `name`, once a start in progress is over (None: none)."""
        starting = self._starting.get(name)
        if starting is not None:
            await starting.wait()
        return self.whereis(name)

    async def actor_for(
        self, name: str, route: Route, *, init: Payload = None, new: bool = False
    ) -> actors.ActorRef:
        """The live actor of topic `name`, started now if there is none.

        A topic started here gets `init` as its `topic.init`. With `new`,
        a topic already live (or starting) raises TopicExistsError.
        Raises actors.StartError if the service fails to start,
        TopicUnavailableError if the topic crashed too often lately, and
        TopicLimitError if as many topics as allowed are live already.
        """
        key = topic_name_key(name)
        closed_until = self.crashes.closed_until(name, trio.current_time())
        if closed_until is not None:
            seconds = max(1, math.ceil(closed_until - trio.current_time()))
            raise TopicUnavailableError(
                f"topic {name!r} crashed {self.crashes.max_crashes} times lately; "
                f"try again in {seconds} s"
            )
        while True:
            ref = self.registry.whereis(key)
            starting = self._starting.get(name)
            if new and (ref is not None or starting is not None):
                raise TopicExistsError(f"topic {name!r} is live already")
            if ref is not None:
                return ref
            if starting is None:
                break
            await starting.wait()
        if self.count() + len(self._starting) >= self.max_live:
            if self.metrics is not None:
                self.metrics.topic_limit_refusals.inc()
            raise TopicLimitError(f"the hub serves {self.max_live} topics already; try again later")
        starting = self._starting[name] = trio.Event()
        try:
            # Bounded: a service whose `started` hangs (a database that does
            # not answer) must not hold its joiners, and the joiners waiting
            # behind them, forever. A start cut short cancels the child.
            with trio.move_on_after(self.start_timeout):
                if self.cluster is not None:
                    return await self._start_in_cluster(self.cluster, name, route, init, new)
                return await self.supervisor_of().start_child(self._topic_spec(name, route, init))
            raise actors.StartError(name, TimeoutError(f"not ready within {self.start_timeout} s"))
        except actors.StartError:
            self.crashes.record(name, trio.current_time())
            raise
        finally:
            del self._starting[name]
            starting.set()

    def _topic_spec(self, name: str, route: Route, init: Payload) -> actors.ChildSpec:
        return actors.ChildSpec(
            id=None,
            start=functools.partial(
                TopicActor,
                hub=self.hub,
                crashes=self.crashes,
                settings=self.settings,
                lifecycle=self.lifecycle,
                init=init,
            ),
            args=(name, route, self.backplane, self.metrics),
            # Not restarted by the supervisor: a topic that crashed has
            # lost its members and state, its members are told and
            # join again, and that join starts it afresh. So a topic
            # a client can crash at will never drains a restart
            # budget that every topic shares.
            restart=actors.Restart.TEMPORARY,
            mailbox_capacity=self.mailbox_capacity,
            label=f"topic {name}",
        )

    async def _start_in_cluster(
        self, cluster: ClusterNode, name: str, route: Route, init: Payload, new: bool
    ) -> actors.ActorRef:
        """Run the topic here if this node takes its lease, else a relay to the node holding it."""
        try:
            holder = await cluster.leases.acquire(name)
        except ConnectionError as error:
            raise actors.StartError(name, error) from error
        supervisor = self.supervisor_of()
        if holder != cluster.node:
            if new:
                raise TopicExistsError(f"topic {name!r} is live already (on node {holder})")
            return await supervisor.start_child(
                cluster.relay_spec(
                    name,
                    holder,
                    empty_grace=self.settings.empty_grace,
                    mailbox_capacity=self.mailbox_capacity,
                )
            )
        try:
            return await supervisor.start_child(self._topic_spec(name, route, init))
        except BaseException:
            # A topic that never started is no topic: its lease goes back
            # (one that started gives it back when it ends: ClusterNode.topic_stopped).
            cluster.leases.release(name)
            raise

    def count(self) -> int:
        return self.supervisor_of().count_children()
