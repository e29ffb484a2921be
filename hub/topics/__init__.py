"""Topics: routes from topic patterns to services, and one actor per live topic.

A topic actor is started on the first join of its topic, under the hub's
topics supervisor (temporary: when it crashes its members are told, and
their next join starts it afresh). It owns its service's state, decides who
may join, handles its members' events and calls one at a time, and stops a
while after its last member leaves. It watches its members' sessions with
monitors, so a session that ends is removed without anyone having to
remember to.

- `routes`: which service serves which topics;
- `messages`: what sessions and topic actors send each other, and `Member`;
- `topic`: `Topic`, the API a service uses (members, broadcast, push, kick);
- `history`: recovery's fields in the join Reply, and `$history` reads;
- `crashes`: the ledger that closes a topic that keeps crashing;
- `actor`: `TopicActor`, the actor behind one topic;
- `registry`: `Topics`, finding a topic's actor and starting it on first use.
"""

from hub.topics.actor import (
    EMPTY_TOPIC_GRACE_SECONDS,
    HOOK_TIMEOUT_SECONDS,
    TOPIC_MAILBOX_CAPACITY,
    HookTimeoutError,
    ServerPublish,
    ServiceExitError,
    ServiceMessage,
    TopicActor,
    TopicLifecycle,
    TopicSettings,
    TopicWithoutPresenceError,
    topic_name_key,
)
from hub.topics.crashes import TOPIC_CRASH_WINDOW_SECONDS, TOPIC_MAX_CRASHES, CrashLedger
from hub.topics.history import (
    DEFAULT_HISTORY_MAX_READ,
    HISTORY_EVENT,
    RESERVED_PREFIX,
    HistoryRead,
    is_reserved,
)
from hub.topics.hub_api import HubServices
from hub.topics.messages import (
    DEFAULT_CALL_TIMEOUT_SECONDS,
    MAX_CALL_TIMEOUT_SECONDS,
    CallService,
    JoinAnswered,
    JoinTopic,
    LeaveTopic,
    Member,
    MembershipEnded,
    Outbound,
    PublishEvent,
    SendFrame,
    Subscriber,
    ToConnection,
    call_deadline,
    outbound_for,
)
from hub.topics.registry import MAX_LIVE_TOPICS, TOPIC_START_TIMEOUT_SECONDS, Topics
from hub.topics.routes import Route
from hub.topics.topic import TickStats, TimerFired, Topic

__all__ = [
    "DEFAULT_CALL_TIMEOUT_SECONDS",
    "DEFAULT_HISTORY_MAX_READ",
    "EMPTY_TOPIC_GRACE_SECONDS",
    "HISTORY_EVENT",
    "HOOK_TIMEOUT_SECONDS",
    "MAX_CALL_TIMEOUT_SECONDS",
    "MAX_LIVE_TOPICS",
    "RESERVED_PREFIX",
    "TOPIC_CRASH_WINDOW_SECONDS",
    "TOPIC_MAILBOX_CAPACITY",
    "TOPIC_MAX_CRASHES",
    "TOPIC_START_TIMEOUT_SECONDS",
    "CallService",
    "CrashLedger",
    "HistoryRead",
    "HookTimeoutError",
    "HubServices",
    "JoinAnswered",
    "JoinTopic",
    "LeaveTopic",
    "Member",
    "MembershipEnded",
    "Outbound",
    "PublishEvent",
    "Route",
    "SendFrame",
    "ServerPublish",
    "ServiceExitError",
    "ServiceMessage",
    "Subscriber",
    "TickStats",
    "TimerFired",
    "ToConnection",
    "Topic",
    "TopicActor",
    "TopicLifecycle",
    "TopicSettings",
    "TopicWithoutPresenceError",
    "Topics",
    "call_deadline",
    "is_reserved",
    "outbound_for",
    "topic_name_key",
]
