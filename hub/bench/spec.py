"""What one load-generator run is told to do: a frozen value, sent to it as JSON."""

from __future__ import annotations

import json
from typing import Any, Final, Literal

import attrs

SCENARIOS: Final = ("idle", "echo", "fanout", "churn", "presence", "lobby", "soak")

#: How the load generator talks to a server: the hub protocol, or the
#: baselines' plain messages (paths /echo, /fanout and /stats).
Dialect = Literal["hub", "plain"]

#: lobby: when the bots send their inputs within a tick's period: each on a
#: clock of its own, their phases spread over the period (as independent
#: players do), or all in the same instant (a burst, the worst case).
Inputs = Literal["spread", "together"]

#: How the hub's clients (fanout: its subscribers) reach it.
Transport = Literal["websocket", "longpoll"]


def _scenario(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in SCENARIOS:
        raise ValueError(f"unknown scenario {value!r}; known: {', '.join(SCENARIOS)}")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be above 0, got {value!r}")


@attrs.frozen(kw_only=True)
class LoadSpec:
    """One run of one scenario against one server."""

    scenario: str = attrs.field(validator=_scenario)
    dialect: Dialect
    #: The hub's WebSocket URL (ws://host:port/ws), or a baseline's ws://host:port.
    url: str
    #: The server's process, for its CPU time and memory; None: not measured.
    server_pid: int | None = None
    #: fanout: the Redis server the hub's workers share, for its CPU time; None: none.
    redis_pid: int | None = None
    #: idle: connections held; echo: connections calling; fanout: subscribers;
    #: churn: clients per wave; presence: members watching the room; lobby: bots
    #: playing; soak: clients.
    connections: int = attrs.field(validator=_positive)
    #: idle and echo: connection i joins `echo:bench-<i mod topics>`; None:
    #: a topic each. (A hub may limit how many topics it serves.) soak: rooms.
    topics: int | None = attrs.field(default=None, validator=_positive)
    #: Connection setups (connect, handshake, join) under way at once.
    concurrency: int = attrs.field(default=64, validator=_positive)
    #: Payload size in bytes: the echoed string, or a chat message's text.
    payload_bytes: int = attrs.field(default=64, validator=_positive)
    #: echo: seconds measured, after `warmup` seconds not measured; soak:
    #: seconds chatting, the first `warmup` of them not counted in the slopes.
    duration: float = attrs.field(default=5.0, validator=_positive)
    warmup: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    #: idle: seconds the connections are held before they are checked and
    #: the server's memory is read.
    hold: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    #: fanout: messages published, and either at most `window` of them not yet
    #: delivered to every subscriber, or `rate` per second regardless; soak:
    #: chat messages per second across the rooms.
    messages: int = attrs.field(default=200, validator=_positive)
    window: int = attrs.field(default=8, validator=_positive)
    rate: float | None = attrs.field(default=None, validator=_positive)
    #: fanout: how long to wait for the last deliveries before counting the
    #: missing ones lost; churn: for the server to notice a wave's closes.
    drain_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: soak: members leaving and coming back per second.
    churn_rate: float = attrs.field(default=20.0, validator=_positive)
    #: churn: waves of `connections` clients.
    waves: int = attrs.field(default=10, validator=_positive)
    #: churn: seconds the server is left alone after the last wave before its
    #: memory is read again (a server may give memory back after a pause:
    #: the hub's trim waits `server.trim_delay_seconds`, 15 s by default).
    settle: float = attrs.field(default=20.0, validator=attrs.validators.ge(0))
    #: fanout, churn and presence: the room (the hub's RoomService; the baselines' /fanout).
    room: str = "room:bench"
    #: presence: clients that each join the room and leave it again, measured.
    churners: int = attrs.field(default=500, validator=_positive)
    #: fanout: the hub's subscribers over WebSockets, or long-polling (at /poll).
    transport: Transport = "websocket"
    #: lobby: players per match (the queue `queue:<match_size>p`).
    match_size: int = attrs.field(default=4, validator=_positive)
    #: lobby: the bots' inputs spread over each tick's period, or sent together.
    inputs: Inputs = "spread"

    def echo_topic(self, index: int) -> str:
        """The echo topic connection `index` joins (idle and echo)."""
        return f"echo:bench-{index % self.topics if self.topics else index}"

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        return cls(**json.loads(text))
