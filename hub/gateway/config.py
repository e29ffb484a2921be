"""The gateway's settings: where it listens, its limits, and its TLS context."""

from __future__ import annotations

import ssl
from typing import Any, Final

import attrs

from hub.transport import DEFAULT_OUTBOX_CAPACITY

__all__ = ["MAX_HEAD_SIZE_LIMIT", "GatewayConfig", "server_ssl_context"]

# The largest request head the gateway reads (RFC 9110 §5.4 leaves it to servers).
MAX_HEAD_SIZE_LIMIT: Final = 16 * 1024


def _positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value!r}")


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


def server_ssl_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """Build a server TLS context from PEM files, with the standard library's safe defaults."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context
