"""The gateway's settings: where it listens, its limits, and its TLS context."""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any, Final

import attrs

from hub.gateway.limits import DEFAULT_CLIENT_ADDRESS_HEADER, LOOPBACK, ClientAddresses, networks
from hub.transport import DEFAULT_OUTBOX_CAPACITY

__all__ = ["MAX_HEAD_SIZE_LIMIT", "GatewayConfig", "server_ssl_context"]

# The largest request head the gateway reads (RFC 9110 §5.4 leaves it to servers).
MAX_HEAD_SIZE_LIMIT: Final = 16 * 1024


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


def _positive_or_none(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"{attribute.name} must be positive or None (no limit), got {value!r}")


def _strings(value: Iterable[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"trusted_proxies must be a collection of addresses, not {value!r}")
    return tuple(value)


def _optional_frozenset(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise TypeError(f"origins must be a collection of origins, not the string {value!r}")
    assert isinstance(value, (set, frozenset, list, tuple))
    return frozenset(value)


@attrs.frozen
class GatewayConfig:
    """Where the gateway listens and the limits it enforces.

    - `host`, `port`: the listening address; `port=0` lets the kernel pick.
      `host=None` listens on every interface (with `port=0` that can mean a
      different port per address family).
    - `origins`: allowed values of a WebSocket request's Origin header, or
      None for any. `"*"` in the set also allows any. A request without an
      Origin header is not from a browser and is let through: the list
      defends browsers against cross-site WebSocket hijacking, and other
      clients are for `authenticate` to judge.
    - `certfile`, `keyfile`: PEM files; with them the port speaks only TLS
      (`https://`, `wss://`). `keyfile` may be omitted if `certfile` holds it.
    - `max_message_size`: largest WebSocket message accepted, in bytes (UTF-8
      for text); a larger one is answered with Close 1009.
    - `ping_interval`: a WebSocket peer silent this long gets a ping.
    - `idle_timeout`: a peer silent this long (no message, no pong, nothing)
      is closed with 1001. Must exceed `ping_interval`.
    - `head_timeout`: time for the TLS handshake plus a request head (and
      then an HTTP request body) to arrive; else 408, or a silent close if
      nothing at all came. Also the keep-alive idle time between requests.
    - `max_head_size`: largest request head (431 beyond), at most 16 KiB.
    - `max_body_size`: largest HTTP request body (413 beyond).
    - `auth_timeout`: time `authenticate` may take (503 beyond).
    - `close_timeout`: time for a WebSocket closing handshake, and for
      lingering while a connection closes.
    - `outbox_capacity`: messages that may wait for one WebSocket client
      beyond what its socket took (see `hub.transport`), or for one
      long-polling client between its polls.
    - `poll_timeout`: how long a long-polling GET is held when nothing waits.
    - `reap_timeout`: a long-polling client that has not polled again this
      long after its last poll ended is gone: its session ends.
    - `max_longpoll_sessions`: long-polling sessions open at once (503 beyond).
    - `max_fragments`: most frames one WebSocket message may come in (1008 beyond).
    - `message_timeout`: time from a WebSocket message's first byte to its
      last (1008 beyond).
    - `max_connections`: open connections in all; one more is answered 503
      with Retry-After and closed, before its request is read. None: no limit.
    - `max_connections_per_address`: open connections from one client
      address; one more is answered 429. None: no limit.
    - `handshakes_per_second`: WebSocket handshakes from one client address
      per second, in a burst of as many; one more is answered 429 with
      Retry-After. None: no limit.
    - `max_handshakes_per_second`: WebSocket handshakes per second in all,
      in a burst of as many; one more is answered 503 with Retry-After.
      None: no limit.
    - `unlimited_addresses`: addresses or networks the per-address limits
      leave alone (loopback by default).
    - `trusted_proxies`: addresses or networks of reverse proxies whose
      `client_address_header` (X-Forwarded-For by default) names the client;
      the header of any other peer is ignored.
    """

    host: str | None = "127.0.0.1"
    port: int = 8000
    origins: frozenset[str] | None = attrs.field(default=None, converter=_optional_frozenset)
    certfile: str | None = None
    keyfile: str | None = None
    max_message_size: int = attrs.field(default=1024 * 1024, validator=_positive)
    ping_interval: float = attrs.field(default=20.0, validator=_positive)
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    head_timeout: float = attrs.field(default=10.0, validator=_positive)
    max_head_size: int = attrs.field(default=MAX_HEAD_SIZE_LIMIT, validator=_positive)
    max_body_size: int = attrs.field(default=1024 * 1024, validator=_positive)
    auth_timeout: float = attrs.field(default=10.0, validator=_positive)
    close_timeout: float = attrs.field(default=5.0, validator=_positive)
    outbox_capacity: int = attrs.field(default=DEFAULT_OUTBOX_CAPACITY, validator=_positive)
    max_fragments: int = attrs.field(default=128, validator=_positive)
    message_timeout: float = attrs.field(default=30.0, validator=_positive)
    max_connections: int | None = attrs.field(default=100_000, validator=_positive_or_none)
    max_connections_per_address: int | None = attrs.field(
        default=1_000, validator=_positive_or_none
    )
    handshakes_per_second: float | None = attrs.field(default=50.0, validator=_positive_or_none)
    max_handshakes_per_second: float | None = attrs.field(
        default=1_000.0, validator=_positive_or_none
    )
    unlimited_addresses: tuple[str, ...] = attrs.field(default=LOOPBACK, converter=_strings)
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    client_address_header: str = DEFAULT_CLIENT_ADDRESS_HEADER
    poll_timeout: float = attrs.field(default=25.0, validator=_positive)
    reap_timeout: float = attrs.field(default=30.0, validator=_positive)
    max_longpoll_sessions: int = attrs.field(default=10_000, validator=_positive)
    #: Share the port with other processes (SO_REUSEPORT): the kernel spreads
    #: new connections over every process listening on it (`hub serve --workers`).
    reuse_port: bool = False

    def __attrs_post_init__(self) -> None:
        if self.idle_timeout <= self.ping_interval:
            raise ValueError(
                f"idle_timeout ({self.idle_timeout}) must exceed "
                f"ping_interval ({self.ping_interval})"
            )
        if self.max_head_size > MAX_HEAD_SIZE_LIMIT:
            raise ValueError(f"max_head_size is at most {MAX_HEAD_SIZE_LIMIT}")
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile given without certfile")
        ClientAddresses.of(self.trusted_proxies)  # raises for one that is no address
        networks(self.unlimited_addresses, "unlimited address")

    @property
    def client_addresses(self) -> ClientAddresses:
        """How the gateway finds a client's address (see `hub.gateway.limits`)."""
        return ClientAddresses.of(self.trusted_proxies, self.client_address_header)


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """Build a server TLS context from PEM files, with the standard library's safe defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
