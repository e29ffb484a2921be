"""The hub's settings: one tree, from defaults, a TOML file, TRIOHUB_* variables and flags.

    [server]     where the hub listens, TLS, the protocol's path, shutdown
    [http]       limits on HTTP requests (every connection starts as one)
    [websocket]  one client's connection: message size, keepalive, slow consumers
    [longpoll]   the HTTP long-polling fallback: its path, poll and reap timeouts
    [session]    one client's protocol: rates, topics, joins, calls, malformed frames
    [limits]     connections per client address and in all, handshakes per second
    [topics]     topic actors: mailboxes, lifetimes, hooks, crashes, calls, history
    [users]      who is connected: the offline grace period, connection hooks
    [notifications]  personal topics and per-user inboxes: their limits
    [logging]    what `hub serve` logs, and how
    [admin]      the operator's views: /metrics, the observer, and their token
    [auth]       signed connection tokens: the secret, whether one is required, expiry

Each source overrides the one before: the defaults here, then a TOML file
(`[topics] empty_grace_seconds = 5`), then environment variables named
`TRIOHUB_<SECTION>__<SETTING>` (`TRIOHUB_TOPICS__EMPTY_GRACE_SECONDS=5`), then
flags. Values are checked once, here; the running hub passes plain values
down to the gateway, sessions, codecs and topics (`hub.app`). A wrong or
unknown setting is a ConfigError whose message names the setting and where
its value came from. docs/configuration.md lists every setting.

pydantic here, attrs elsewhere: settings arrive as untrusted text and TOML
values, and pydantic turns them into typed values with each error located,
which attrs would leave to hand-written conversion. pydantic-settings' own
sources are not used: they read the process's environment whenever a
config is built (in code and tests too), skip unknown TRIOHUB_* variables
silently, and fix the TOML file's name in the class; `load_config` layers
the sources itself.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import attrs
import pydantic
from pydantic import AfterValidator, BeforeValidator, Field
from pydantic_core import ErrorDetails

from hub.backplane import DEFAULT_HISTORY_SIZE, DEFAULT_RETENTION_SECONDS
from hub.cluster.node import DEFAULT_HEARTBEAT_SECONDS, DEFAULT_LEASE_SECONDS
from hub.errors import ConfigError
from hub.gateway.config import MAX_HEAD_SIZE_LIMIT
from hub.hooks import APP_HOOK_TIMEOUT_SECONDS
from hub.notifications import INBOX_MAX_AGE_SECONDS, INBOX_MAX_PER_USER
from hub.presence import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_MAX_META_BYTES,
    DEFAULT_MAX_SUBSCRIBERS,
)
from hub.protocol import (
    BYTES_PER_SECOND,
    JOINS_PER_SECOND,
    MALFORMED_WINDOW_SECONDS,
    MAX_MALFORMED,
    MAX_MESSAGE_BYTES,
    MAX_TOPICS,
    MESSAGES_PER_SECOND,
)
from hub.tokens import (
    DEFAULT_LEEWAY_SECONDS,
    DEFAULT_REFRESH_LEAD_SECONDS,
    MIN_SECRET_LENGTH,
    TokenVerifier,
)
from hub.topics import (
    DEFAULT_CALL_TIMEOUT_SECONDS,
    DEFAULT_HISTORY_MAX_READ,
    EMPTY_TOPIC_GRACE_SECONDS,
    HOOK_TIMEOUT_SECONDS,
    MAX_CALL_TIMEOUT_SECONDS,
    MAX_LIVE_TOPICS,
    TOPIC_CRASH_WINDOW_SECONDS,
    TOPIC_MAILBOX_CAPACITY,
    TOPIC_MAX_CRASHES,
    TOPIC_START_TIMEOUT_SECONDS,
)
from hub.transport import DEFAULT_OUTBOX_CAPACITY
from hub.users import OFFLINE_GRACE_SECONDS

__all__ = [
    "CONFIG_VARIABLE",
    "ENV_PREFIX",
    "AdminConfig",
    "AuthConfig",
    "HttpConfig",
    "HubConfig",
    "LimitsConfig",
    "LoggingConfig",
    "LongPollConfig",
    "NotificationsConfig",
    "PresenceConfig",
    "ServerConfig",
    "SessionConfig",
    "TopicsConfig",
    "UsersConfig",
    "WebSocketConfig",
    "env_name",
    "format_toml",
    "load_config",
    "setting_names",
]

ENV_PREFIX: Final = "TRIOHUB_"
#: Names the TOML file when --config does not.
CONFIG_VARIABLE: Final = "TRIOHUB_CONFIG"
#: Set by `hub serve --workers N` in each worker (its index): not a setting.
WORKER_VARIABLE: Final = "TRIOHUB_WORKER"
# Between the section and the setting in a variable's name (names hold "_").
_ENV_DELIMITER: Final = "__"


# --- the kinds of value, and what a message says each must be ---------------------


@attrs.frozen
class _Expect:
    """What a value of this kind must be, as an error message says it."""

    text: str


def _not_bool(value: object) -> object:
    # pydantic reads True as 1; in a TOML file it is a mistake, not a number.
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _none_if_empty(value: object) -> object:
    # TRIOHUB_SERVER__KEYFILE= (empty) leaves the file unset.
    return None if value == "" else value


def _split_commas(value: object) -> object:
    # From a variable or a flag, a list is one comma-separated string.
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _host_port(value: object) -> object:
    """`"127.0.0.1:9100"` -> ("127.0.0.1", 9100); `[::1]:9100` too; "" -> None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value  # a (host, port) pair from code; pydantic checks it
    host, colon, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("not a host:port")
    return host, int(port)


def _check_proxies(value: tuple[str, ...]) -> tuple[str, ...]:
    for proxy in value:
        ipaddress.ip_network(proxy, strict=False)  # its ValueError names the setting
    return value


_NUMBER = BeforeValidator(_not_bool)

Seconds = Annotated[float, _NUMBER, Field(gt=0, allow_inf_nan=False), _Expect("a number > 0")]
SecondsOrZero = Annotated[
    float, _NUMBER, Field(ge=0, allow_inf_nan=False), _Expect("a number >= 0")
]
Count = Annotated[int, _NUMBER, Field(ge=1), _Expect("an integer >= 1")]
CountOrZero = Annotated[int, _NUMBER, Field(ge=0), _Expect("an integer >= 0")]
Rate = Annotated[float, _NUMBER, Field(gt=0, allow_inf_nan=False), _Expect("a number > 0")]
RateOrZero = Annotated[float, _NUMBER, Field(ge=0, allow_inf_nan=False), _Expect("a number >= 0")]
Port = Annotated[int, _NUMBER, Field(ge=0, le=65535), _Expect("an integer in 0..65535")]
HeadSize = Annotated[
    int,
    _NUMBER,
    Field(ge=1, le=MAX_HEAD_SIZE_LIMIT),
    _Expect(f"an integer in 1..{MAX_HEAD_SIZE_LIMIT}"),
]
Host = Annotated[str, Field(min_length=1), _Expect("a host name or address")]
UrlPath = Annotated[str, Field(pattern=r"^/"), _Expect("a path starting with '/'")]
File = Annotated[str | None, BeforeValidator(_none_if_empty), _Expect("a file name")]
Origins = Annotated[
    tuple[str, ...] | None,
    BeforeValidator(_split_commas),
    _Expect("a list of origins such as 'https://example.com', or '*'"),
]
Proxies = Annotated[
    tuple[str, ...],
    BeforeValidator(_split_commas),
    AfterValidator(_check_proxies),
    _Expect("a list of IP addresses or networks, such as '10.0.0.0/8'"),
]
HeaderName = Annotated[
    str,
    BeforeValidator(_lower),
    Field(pattern=r"^[a-z0-9-]+$"),
    _Expect("a header name such as 'x-forwarded-for'"),
]
ListenAddress = Annotated[
    tuple[str, int] | None,
    BeforeValidator(_host_port),
    _Expect("a host:port such as '127.0.0.1:9100' or '[::1]:9100'"),
]
LogLevel = Annotated[
    Literal["debug", "info", "warning", "error"],
    BeforeValidator(_lower),
    _Expect("one of debug, info, warning, error"),
]
LogFormat = Annotated[
    Literal["text", "json"], BeforeValidator(_lower), _Expect("one of text, json")
]
Switch = Annotated[bool, _Expect("true or false")]


# A Redis URL may hold a password: kept secret like a token.
def _check_redis_url(value: pydantic.SecretStr | None) -> pydantic.SecretStr | None:
    if value is not None and not value.get_secret_value().startswith(
        ("redis://", "rediss://", "unix://")
    ):
        raise ValueError("not a redis://, rediss:// or unix:// URL")
    return value


RedisUrl = Annotated[
    pydantic.SecretStr | None,
    BeforeValidator(_none_if_empty),
    AfterValidator(_check_redis_url),
    _Expect("a redis://, rediss:// or unix:// URL"),
]
Prefix = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$"), _Expect("1 to 64 letters, digits, '_', '.', '-'")
]

# A secret: never shown by repr() or --print-config. 16 characters at least,
# so that a placeholder such as "secret" is refused rather than trusted.
Token = Annotated[
    pydantic.SecretStr | None,
    BeforeValidator(_none_if_empty),
    Field(min_length=16),
    _Expect("a secret of at least 16 characters"),
]

# The key that signs connection tokens (HS256 wants 256 bits: 32 characters).
Secret = Annotated[
    pydantic.SecretStr | None,
    BeforeValidator(_none_if_empty),
    Field(min_length=MIN_SECRET_LENGTH),
    _Expect(f"a secret of at least {MIN_SECRET_LENGTH} characters"),
]


class _Section(pydantic.BaseModel):
    # Frozen: one config is shared by every part of a running hub. Unknown
    # names are errors, so that a typo does not pass for a setting.
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")


# --- the tree ----------------------------------------------------------------------


class ServerConfig(_Section):
    """Where the hub listens, TLS, the hub protocol's path, and shutdown."""

    #: Address to listen on (`0.0.0.0` or `::` for every interface).
    host: Host = "127.0.0.1"
    #: TCP port; 0 picks a free one.
    port: Port = 8000
    #: The WebSocket path of the hub protocol.
    path: UrlPath = "/ws"
    #: Allowed Origin headers of WebSocket requests (`*` or None: any).
    origins: Origins = None
    #: PEM certificate (chain): with it the port speaks only TLS.
    certfile: File = None
    #: PEM private key, if not inside `certfile`.
    keyfile: File = None
    #: On shutdown, how long each connection may take to write what is queued for it.
    drain_seconds: Seconds = 5.0
    #: Allocations between two young-generation garbage collections while the
    #: hub runs (Python's default is 700); 0 leaves the collector as it is.
    gc_threshold: CountOrZero = 50_000
    #: Give freed memory back to the system (glibc only) once this many
    #: connections have closed since the last time; 0 never does.
    trim_after_closes: CountOrZero = 500
    #: ... and then no connection has closed for this long (keep it above
    #: presence's grace and topics' empty grace, so that what departed
    #: clients left in presence and in topics of their own is freed first);
    #: under a churn that never pauses, six times this at most.
    trim_delay_seconds: Seconds = 15.0
    #: Addresses or networks of reverse proxies whose `client_address_header` names the client.
    trusted_proxies: Proxies = ()
    #: The header a trusted proxy names the client's address in.
    client_address_header: HeaderName = "x-forwarded-for"
    #: Worker processes sharing the port (SO_REUSEPORT), each with its own
    #: event loop; above 1 they need `backplane.redis_url` and a fixed port.
    workers: Count = 1

    @property
    def tls(self) -> bool:
        return self.certfile is not None


class HttpConfig(_Section):
    """Limits on HTTP requests, including the WebSocket upgrade request."""

    #: Time for the TLS handshake and a request head (and body) to arrive; keep-alive idle time.
    head_timeout: Seconds = 10.0
    #: Largest request head, in bytes (431 beyond).
    max_head_size: HeadSize = MAX_HEAD_SIZE_LIMIT
    #: Largest HTTP request body, in bytes (413 beyond).
    max_body_size: Count = 1024 * 1024
    #: Time the application's `authenticate` hook may take (503 beyond).
    auth_timeout: Seconds = 10.0


class WebSocketConfig(_Section):
    """One client's WebSocket: message size, keepalive, closing, slow consumers."""

    #: Largest message a client may send, in bytes (UTF-8 for text); larger: close 1009.
    max_message_size: Count = MAX_MESSAGE_BYTES
    #: Seconds of silence after which the server pings a client.
    ping_interval: Seconds = 20.0
    #: Seconds of silence after which a client is closed (1001); above `ping_interval`.
    idle_timeout: Seconds = 60.0
    #: Time for a closing handshake, and for the Close to go out.
    close_timeout: Seconds = 5.0
    #: A client whose backlog its socket does not drain in this long is evicted (1013).
    write_timeout: Seconds = 10.0
    #: Messages that may wait for one client beyond what its socket took; then 1013.
    outbox_capacity: Count = DEFAULT_OUTBOX_CAPACITY
    #: Most frames one message may come in; more: close 1008.
    max_fragments: Count = 128
    #: Seconds from a message's first byte to its last; longer: close 1008.
    message_timeout: Seconds = 30.0


class LongPollConfig(_Section):
    """The HTTP long-polling fallback, for clients that cannot open a WebSocket."""

    #: Serve long-polling sessions (at `path`) beside the WebSocket.
    enabled: Switch = True
    #: The path sessions are opened at (POST) and used below (`<path>/<id>`).
    path: UrlPath = "/poll"
    #: Seconds a poll (GET) is held when nothing waits for the client.
    poll_timeout: Seconds = 25.0
    #: Seconds a client may take to poll again before its session is ended.
    reap_timeout: Seconds = 30.0
    #: Long-polling sessions open at once; more are refused with 503.
    max_sessions: Count = 10_000


class SessionConfig(_Section):
    """One client's use of the protocol."""

    #: Most topics one connection may have joined or be joining at once.
    max_topics: Count = MAX_TOPICS
    #: Joins one connection may send per second, and in a burst.
    joins_per_second: Rate = JOINS_PER_SECOND
    #: Messages (heartbeats included) one connection may send per second, and in a burst;
    #: beyond, `rate_limited`, then 1008.
    messages_per_second: Rate = MESSAGES_PER_SECOND
    #: Message bytes one connection may send per second, and in a burst; beyond, as above.
    bytes_per_second: Rate = BYTES_PER_SECOND
    #: Calls one connection may have waiting for their replies; one more is `rate_limited`.
    max_calls_in_flight: Count = 32
    #: Malformed frames a client may send in a burst before it is closed (1008).
    max_malformed: Count = MAX_MALFORMED
    #: The malformed-frame allowance refills fully over this many seconds.
    malformed_window_seconds: Seconds = MALFORMED_WINDOW_SECONDS


class LimitsConfig(_Section):
    """Connections per client address and in all, and WebSocket handshakes per second."""

    #: Connections open at once in all; one more is answered 503 (0: no limit).
    max_connections: CountOrZero = 100_000
    #: Connections open at once from one client address; one more is answered 429 (0: no limit).
    max_connections_per_address: CountOrZero = 1_000
    #: WebSocket handshakes per second from one client address, and in a burst;
    #: one more is answered 429 with Retry-After (0: no limit).
    handshakes_per_second: RateOrZero = 50.0
    #: WebSocket handshakes per second in all, and in a burst; one more is answered 503
    #: with Retry-After (0: no limit).
    max_handshakes_per_second: RateOrZero = 1_000.0
    #: Addresses or networks the per-address limits leave alone.
    unlimited_addresses: Proxies = ("127.0.0.0/8", "::1")


class TopicsConfig(_Section):
    """Topic actors: how many, their mailboxes, lifetimes, hooks, crashes, calls and history."""

    #: Most topics live at once in the hub; a join that would start one more is refused.
    max_live: Count = MAX_LIVE_TOPICS
    #: Requests queued for one topic; beyond, a request is answered `overloaded`.
    mailbox_capacity: Count = TOPIC_MAILBOX_CAPACITY
    #: How long a topic whose last member left waits for one before it stops.
    empty_grace_seconds: Seconds = EMPTY_TOPIC_GRACE_SECONDS
    #: How long a topic's service may take to start before the join fails.
    start_timeout_seconds: Seconds = TOPIC_START_TIMEOUT_SECONDS
    #: How long any one service hook may run before its topic is crashed.
    hook_timeout_seconds: Seconds = HOOK_TIMEOUT_SECONDS
    #: Crashes within `crash_window_seconds` after which a topic is not served for a while.
    max_crashes: Count = TOPIC_MAX_CRASHES
    #: The window over which a topic's crashes are counted.
    crash_window_seconds: Seconds = TOPIC_CRASH_WINDOW_SECONDS
    #: How long a Call waits for its service unless the client asks for less.
    call_timeout_seconds: Seconds = DEFAULT_CALL_TIMEOUT_SECONDS
    #: The longest a client may ask a Call to wait.
    max_call_timeout_seconds: Seconds = MAX_CALL_TIMEOUT_SECONDS
    #: Events kept per topic, for clients that rejoin (0: none).
    history_size: CountOrZero = DEFAULT_HISTORY_SIZE
    #: How long a topic's history outlives its actor's idle stop.
    history_retention_seconds: SecondsOrZero = DEFAULT_RETENTION_SECONDS
    #: Most events one `$history` call returns (a larger `limit` is cut to it).
    history_max_read: Count = DEFAULT_HISTORY_MAX_READ


class UsersConfig(_Section):
    """Who is connected: when a user counts as gone, and the application's connection hooks."""

    #: How long after a user's last connection ends before the user is offline
    #: (the `on_offline` hook); a connection within it carries on as if none ended.
    offline_grace_seconds: SecondsOrZero = OFFLINE_GRACE_SECONDS
    #: How long an `on_connect`, `on_disconnect` or `on_offline` hook may run.
    hook_timeout_seconds: Seconds = APP_HOOK_TIMEOUT_SECONDS


class NotificationsConfig(_Section):
    """Personal topics (`user:<id>`) and the per-user inboxes behind them."""

    #: Serve `user:*` as personal topics (only the user's own connections may join).
    personal_topics: Switch = True
    #: Unacknowledged notifications kept per user; a new one past it drops the oldest.
    max_per_user: Count = INBOX_MAX_PER_USER
    #: How long an unacknowledged notification is kept before it is dropped.
    max_age_seconds: Seconds = INBOX_MAX_AGE_SECONDS


class PresenceConfig(_Section):
    """Presence defaults; each route's `Presence(...)` may choose its own (docs/presence.md)."""

    #: How long an ended connection's entries stay; a client back within it shows no leave.
    grace_seconds: SecondsOrZero = DEFAULT_GRACE_SECONDS
    #: Coalesced and counts modes push at most once per this many seconds to each member.
    interval_seconds: Seconds = DEFAULT_INTERVAL_SECONDS
    #: The most one connection's presence meta may take, as msgpack.
    max_meta_bytes: Count = DEFAULT_MAX_META_BYTES
    #: Backend actors subscribed to one topic's presence at most.
    max_subscribers: Count = DEFAULT_MAX_SUBSCRIBERS


class LoggingConfig(_Section):
    """What `hub serve` logs, and how."""

    #: debug, info, warning or error.
    level: LogLevel = "info"
    #: `text` for people, `json` (one object per line) for log collectors.
    format: LogFormat = "text"
    #: Connection and topic lines (info) logged per second at most, in a burst
    #: of as many; the others are counted, and summed up in one line.
    lines_per_second: Rate = 20.0


class AdminConfig(_Section):
    """The operator's views of a running hub: /metrics, the observer page, `hub top`."""

    #: The secret /metrics and the observer ask for; None: open to whoever reaches the port.
    token: Token = None
    #: Serve the observer (/observer, and `hub top`).
    observer: Switch = False
    #: How often the observer's views get a new snapshot, in seconds.
    observer_interval_seconds: Seconds = 1.0
    #: Serve Prometheus metrics at /metrics (only where asked: off by default).
    metrics: Switch = False
    #: Serve /metrics at this `host:port` alone, not on the hub's port (None: the hub's port).
    metrics_address: ListenAddress = None


class BackplaneConfig(_Section):
    """How topics' events and history reach the other nodes: in process, or through Redis."""

    #: The Redis or Valkey server every node shares; None: this process alone (the default).
    redis_url: RedisUrl = None
    #: What every key and channel of this hub starts with in Redis (hubs sharing one Redis differ).
    prefix: Prefix = "triohub"
    #: How long a node's heartbeat and its topics' leases hold unrenewed, in seconds:
    #: a node that dies has its topics taken over, and its members removed
    #: elsewhere, within this plus `heartbeat_seconds`.
    lease_seconds: Seconds = DEFAULT_LEASE_SECONDS
    #: How often a node renews its heartbeat and leases, and checks on other nodes.
    heartbeat_seconds: Seconds = DEFAULT_HEARTBEAT_SECONDS


class AuthConfig(_Section):
    """Signed connection tokens (docs/auth.md): the key they are signed with, and expiry."""

    #: The HMAC-SHA256 key tokens are signed with; with it the hub takes tokens.
    secret: Secret = None
    #: A file holding the key instead (its text, surrounding whitespace removed).
    secret_file: File = None
    #: Refuse (401) connections without a token (or an identity from the app's hook).
    required: Switch = False
    #: Clock skew allowed on a token's times (`exp`, `nbf`, `iat`), in seconds.
    leeway_seconds: SecondsOrZero = DEFAULT_LEEWAY_SECONDS
    #: A connection is told this long before its token runs out (an Expiring frame).
    refresh_lead_seconds: SecondsOrZero = DEFAULT_REFRESH_LEAD_SECONDS

    def verifier(self) -> TokenVerifier | None:
        """The token verifier of these settings; None without a secret.

        Raises ConfigError if `secret_file` cannot be read or holds too short a key.
        """
        if self.secret is not None:
            secret = self.secret.get_secret_value()
        elif self.secret_file is not None:
            try:
                secret = Path(self.secret_file).read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(
                    f"setting auth.secret_file: cannot read {self.secret_file!r}: {error}"
                ) from error
            if len(secret) < MIN_SECRET_LENGTH:
                raise ConfigError(
                    f"setting auth.secret_file: {self.secret_file!r} holds {len(secret)} "
                    f"characters; a token secret needs at least {MIN_SECRET_LENGTH}"
                )
        else:
            return None
        return TokenVerifier(secret, leeway=self.leeway_seconds)


class _Clash(ValueError):
    """Two settings that are each valid but not together; `setting` is the one to change."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class HubConfig(_Section):
    """Everything `hub serve` can be told: one frozen tree of sections.

    Build it in code with sections (`HubConfig(server=ServerConfig(port=0))`),
    from a tree shaped like the TOML file (`HubConfig.from_settings`), or from
    every source as `hub serve` does (`load_config`). See docs/configuration.md.
    """

    server: ServerConfig = ServerConfig()
    http: HttpConfig = HttpConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    longpoll: LongPollConfig = LongPollConfig()
    session: SessionConfig = SessionConfig()
    limits: LimitsConfig = LimitsConfig()
    topics: TopicsConfig = TopicsConfig()
    users: UsersConfig = UsersConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    presence: PresenceConfig = PresenceConfig()
    logging: LoggingConfig = LoggingConfig()
    admin: AdminConfig = AdminConfig()
    backplane: BackplaneConfig = BackplaneConfig()
    auth: AuthConfig = AuthConfig()

    @pydantic.model_validator(mode="after")
    def _check_together(self) -> HubConfig:
        websocket, server, topics, auth = self.websocket, self.server, self.topics, self.auth
        if auth.secret is not None and auth.secret_file is not None:
            raise _Clash(
                "auth.secret_file",
                "settings auth.secret and auth.secret_file are both given; set only one",
            )
        if auth.required and auth.secret is None and auth.secret_file is None:
            raise _Clash(
                "auth.required",
                "setting auth.required is true but tokens have no secret to be checked with: "
                "set auth.secret (TRIOHUB_AUTH__SECRET) or auth.secret_file",
            )
        if server.workers > 1 and self.backplane.redis_url is None:
            raise _Clash(
                "server.workers",
                f"setting server.workers is {server.workers} but the workers would not see "
                "each other's clients: each is a process of its own, and they share topics "
                "only through Redis; set backplane.redis_url (--redis redis://host:6379/0)",
            )
        backplane = self.backplane
        if backplane.lease_seconds < 2 * backplane.heartbeat_seconds:
            raise _Clash(
                "backplane.lease_seconds",
                f"setting backplane.lease_seconds ({backplane.lease_seconds}) must be at least "
                f"twice backplane.heartbeat_seconds ({backplane.heartbeat_seconds}), or one "
                "slow renewal would lose a node its topics",
            )
        if server.workers > 1 and server.port == 0:
            raise _Clash(
                "server.port",
                "setting server.port is 0 (any free port) but server.workers is "
                f"{server.workers}: the workers share one port, so name it (--port 8000)",
            )
        if websocket.idle_timeout <= websocket.ping_interval:
            raise _Clash(
                "websocket.idle_timeout",
                f"setting websocket.idle_timeout ({websocket.idle_timeout}) must exceed "
                f"websocket.ping_interval ({websocket.ping_interval})",
            )
        if server.keyfile is not None and server.certfile is None:
            raise _Clash(
                "server.keyfile", "setting server.keyfile is given without server.certfile"
            )
        if topics.call_timeout_seconds > topics.max_call_timeout_seconds:
            raise _Clash(
                "topics.call_timeout_seconds",
                f"setting topics.call_timeout_seconds ({topics.call_timeout_seconds}) must not "
                f"exceed topics.max_call_timeout_seconds ({topics.max_call_timeout_seconds})",
            )
        return self

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> HubConfig:
        """Check a tree of settings shaped like the TOML file, `{"server": {"port": 0}}`.

        Sections and settings left out keep their defaults. Raises ConfigError
        naming each wrong or unknown setting.
        """
        layers = _Layers()
        layers.add_tree(settings, "")
        return layers.build()


# --- names -------------------------------------------------------------------------


def _sections() -> dict[str, type[_Section]]:
    sections: dict[str, type[_Section]] = {}
    for name, field in HubConfig.model_fields.items():
        assert isinstance(field.annotation, type) and issubclass(field.annotation, _Section)
        sections[name] = field.annotation
    return sections


_SECTIONS: Final = _sections()


def setting_names() -> Iterator[str]:
    """Every setting's dotted name (`server.port`), in the tree's order."""
    for section, model in _SECTIONS.items():
        for name in model.model_fields:
            yield f"{section}.{name}"


def env_name(setting: str) -> str:
    """The environment variable of a dotted setting name: `TRIOHUB_SERVER__PORT`."""
    return ENV_PREFIX + setting.replace(".", _ENV_DELIMITER).upper()


# Settings whose values error messages must not show.
_SECRETS: Final = frozenset({"admin.token", "auth.secret"})

# A setting's name alone (`port`), for hints to users of the flat names.
_BY_NAME: Final = {setting.split(".")[1]: setting for setting in setting_names()}


def _suggest(name: str, candidates: Mapping[str, str]) -> str | None:
    """`did you mean ...?` for a name close to one of `candidates` (name -> as said)."""
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"did you mean {candidates[close[0]]}?" if close else None


def _expected(setting: str) -> str:
    """What the setting must be, from the `_Expect` in its type."""
    section, _, name = setting.partition(".")
    field = _SECTIONS[section].model_fields[name]
    for item in field.metadata:
        if isinstance(item, _Expect):
            return item.text
    raise AssertionError(f"setting {setting} says nothing of what it must be")


# --- the sources, layered ----------------------------------------------------------


@attrs.define
class _Layers:
    """Settings from every source, later ones winning, and where each came from."""

    tree: dict[str, Any] = attrs.Factory(dict)
    #: Dotted setting -> where its value came from ("" for code).
    sources: dict[str, str] = attrs.Factory(dict)

    def add(self, section: str, name: str | None, value: object, source: str) -> None:
        if name is None:  # a value where a section belongs (TOML `server = 5`)
            self.tree[section] = value
            self.sources[section] = source
            return
        table = self.tree.get(section)
        if not isinstance(table, dict):
            table = self.tree[section] = {}
        table[name] = value
        self.sources[f"{section}.{name}"] = source

    def add_tree(self, tree: Mapping[str, Any], source: str) -> None:
        for section, table in tree.items():
            if isinstance(table, Mapping):
                for name, value in table.items():
                    self.add(section, name, value, source)
            else:
                self.add(section, None, table, source)

    def build(self) -> HubConfig:
        try:
            return HubConfig.model_validate(self.tree)
        except pydantic.ValidationError as error:
            problems = [self._describe(detail) for detail in error.errors()]
            raise ConfigError("\n".join(dict.fromkeys(problems))) from None

    def _describe(self, detail: ErrorDetails) -> str:
        """One line for one of pydantic's error details, naming the setting."""
        location = tuple(str(part) for part in detail["loc"])
        kind = detail["type"]
        clash = (detail.get("ctx") or {}).get("error")
        if isinstance(clash, _Clash):
            return str(clash) + self._from(clash.setting)
        if kind == "extra_forbidden":
            return self._unknown(location)
        setting = ".".join(location[:2])
        if len(location) == 1:
            got = self.tree.get(location[0])
            return (
                f"setting {setting} must be a table of settings, got {got!r}{self._from(setting)}"
            )
        got = self.tree.get(location[0], {}).get(location[1], detail["input"])
        # A secret is not repeated into a terminal or a log, only measured.
        secret = setting in _SECRETS and isinstance(got, str)
        shown = f"{len(got)} characters" if secret else repr(got)
        return f"setting {setting} must be {_expected(setting)}, got {shown}{self._from(setting)}"

    def _unknown(self, location: tuple[str, ...]) -> str:
        """Name an unknown setting, and the known one it is closest to."""
        if len(location) == 1 and isinstance(self.tree.get(location[0]), dict):
            (section,) = location
            hint = _suggest(section, {known: f"[{known}]" for known in _SECTIONS})
            return f"unknown section [{section}]{self._from(section)}; " + (
                hint or f"the sections are {', '.join(_SECTIONS)}"
            )
        if len(location) == 1:  # a value at the top, where only sections belong
            (setting,) = location
            # A flat name from before the sections (`port`) says where it went.
            hint = (
                (f"did you mean {_BY_NAME[setting]}?" if setting in _BY_NAME else None)
                or _suggest(setting, {section: f"[{section}]" for section in _SECTIONS})
                or _suggest(setting, _BY_NAME)
                or f"the sections are {', '.join(_SECTIONS)}"
            )
        else:
            section, name = location[:2]
            setting = f"{section}.{name}"
            names = _SECTIONS[section].model_fields
            hint = (
                _suggest(name, {known: f"{section}.{known}" for known in names})
                or _suggest(name, _BY_NAME)
                or f"[{section}] has {', '.join(names)}"
            )
        return f"unknown setting {setting}{self._from(setting)}; {hint}"

    def _from(self, setting: str) -> str:
        """Where `setting` came from, ` (in hub.toml)`; for a section, its first setting's."""
        source = self.sources.get(setting) or next(
            (where for name, where in self.sources.items() if name.startswith(f"{setting}.")), ""
        )
        return f" ({source})" if source else ""


def _read_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error}") from error
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from error


def _add_environment(layers: _Layers, environ: Mapping[str, str]) -> None:
    problems: list[str] = []
    for variable, value in sorted(environ.items()):
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() in (
            CONFIG_VARIABLE,
            WORKER_VARIABLE,
        ):
            continue
        section, delimiter, name = variable[len(ENV_PREFIX) :].lower().partition(_ENV_DELIMITER)
        if delimiter and section and name:
            layers.add(section, name, value, f"from {variable}")
            continue
        hint = _BY_NAME.get(section)
        problems.append(
            f"unknown variable {variable}; did you mean {env_name(hint)}?"
            if hint
            else f"unknown variable {variable}: settings are read from variables named "
            f"TRIOHUB_<SECTION>__<SETTING>, such as TRIOHUB_SERVER__PORT"
        )
    if problems:
        raise ConfigError("\n".join(problems))


def load_config(
    *,
    file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    overrides_source: str = "from overrides",
) -> HubConfig:
    """Build the configuration: defaults < TOML `file` < TRIOHUB_* variables < `overrides`.

    The file may be named by TRIOHUB_CONFIG too; its tables are the
    sections. Variables are `TRIOHUB_<SECTION>__<SETTING>`; their values,
    strings, are read as the setting's type (a list from a comma-separated
    string). `overrides` maps dotted names (`"server.port"`) to values; a
    None value leaves the setting alone (a flag not given). Every wrong or
    unknown setting is a ConfigError naming it and its source
    (`overrides_source` for the overrides: `hub serve` says "from the command line").
    """
    environ = os.environ if environ is None else environ
    layers = _Layers()
    file = file or environ.get(CONFIG_VARIABLE)
    if file:
        path = Path(file)
        layers.add_tree(_read_file(path), f"in {path}")
    _add_environment(layers, environ)
    for setting, value in (overrides or {}).items():
        if value is None:
            continue
        section, dot, name = setting.partition(".")
        layers.add(section, name if dot else None, value, overrides_source)
    return layers.build()


def format_toml(config: HubConfig) -> str:
    """The settings as a TOML file that `load_config` reads back to the same config."""
    lines: list[str] = []
    for section in _SECTIONS:
        lines.append(f"[{section}]")
        for name, value in getattr(config, section).model_dump().items():
            if value is None:
                lines.append(f"# {name}: not set")
            elif isinstance(value, pydantic.SecretStr):
                lines.append(f"# {name}: set, not shown")
            else:
                lines.append(f"{name} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: object) -> str:
    # JSON's strings, numbers, booleans and arrays of strings are TOML too.
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)
