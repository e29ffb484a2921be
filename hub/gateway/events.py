"""What the gateway tells its observer (for metrics), and the one way it refuses a request.

Every refusal is logged at info level, one line that names the client's
address, the status and why in a word (`bad_request`, `limit`...), never
the bytes the client sent; and no more than `RefusalLog.lines` lines per
`RefusalLog.interval` seconds: the rest are counted, and the next line says
how many were not logged.
"""

from __future__ import annotations

import enum
import http
import logging
from collections.abc import Callable

import attrs
import trio

from hub.http import HttpConnection, RemoteAddress

__all__ = [
    "GatewayEvent",
    "IdleClosed",
    "LimitHit",
    "ProtocolViolationClosed",
    "RefusalLog",
    "RejectReason",
    "RequestRejected",
    "RouteObserver",
    "WebSocketAccepted",
    "reason_for_status",
    "reject",
]


class RejectReason(enum.StrEnum):
    """Why a request was refused, as a metrics label."""

    ORIGIN = "origin"
    SUBPROTOCOL = "subprotocol"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    LIMIT = "limit"
    """A connection or handshake limit (429, or 503 when the hub is full)."""


@attrs.frozen
class WebSocketAccepted:
    path: str
    subprotocol: str | None


@attrs.frozen
class RequestRejected:
    """A request refused before any handler ran; `path` is None if unknown."""

    reason: RejectReason
    status: int
    path: str | None


@attrs.frozen
class ProtocolViolationClosed:
    """The gateway closed a WebSocket first with a violation code (1002, 1007, 1009...)."""

    path: str
    code: int


@attrs.frozen
class IdleClosed:
    """A WebSocket peer went silent past `idle_timeout` and was closed with 1001."""

    path: str


@attrs.frozen
class LimitHit:
    """A client ran into one of the gateway's limits (docs/security.md); `limit` names it."""

    limit: str


GatewayEvent = WebSocketAccepted | RequestRejected | ProtocolViolationClosed | IdleClosed | LimitHit


@attrs.frozen
class RouteObserver:
    """Turns one route's transport closes into gateway events."""

    path: str
    observe: Callable[[GatewayEvent], None]

    def violation(self, code: int) -> None:
        self.observe(ProtocolViolationClosed(self.path, code))

    def idle(self) -> None:
        self.observe(IdleClosed(self.path))

    def limit(self, name: str) -> None:
        self.observe(LimitHit(name))


def reason_for_status(status: int) -> RejectReason:
    """The metrics label of a refusal the HTTP layer chose the status of."""
    if status == http.HTTPStatus.REQUEST_TIMEOUT:
        return RejectReason.TIMEOUT
    if status in (
        http.HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ):
        return RejectReason.TOO_LARGE
    return RejectReason.BAD_REQUEST


logger = logging.getLogger("hub.gateway")


@attrs.define
class RefusalLog:
    """Logs refusals, at most `lines` per `interval` seconds (see the module docstring)."""

    lines: int = 10
    interval: float = 10.0
    _window_start: float = attrs.field(init=False, default=-1e18)
    _logged: int = attrs.field(init=False, default=0)
    _held_back: int = attrs.field(init=False, default=0)

    def refused(self, remote: RemoteAddress | None, status: int, reason: RejectReason) -> None:
        now = trio.current_time()
        if now - self._window_start >= self.interval:
            if self._held_back:
                logger.info(
                    "%d more requests refused in %g s, not logged", self._held_back, self.interval
                )
            self._window_start, self._logged, self._held_back = now, 0, 0
        if self._logged >= self.lines:
            self._held_back += 1
            return
        self._logged += 1
        # Nothing the client sent (its path, its headers) is repeated here.
        address = remote[0] if remote is not None else "an unknown address"
        logger.info("refused a request from %s: %d (%s)", address, status, reason)


async def reject(
    connection: HttpConnection,
    observe: Callable[[GatewayEvent], None],
    path: str | None,
    reason: RejectReason,
    status: int,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
    *,
    log: RefusalLog | None = None,
    remote: RemoteAddress | None = None,
) -> None:
    """Refuse a request: tell the observer and the log, and answer `status` with `message`."""
    observe(RequestRejected(reason, status, path))
    if log is not None:
        log.refused(remote, status, reason)
    await connection.send_error(status, message, headers=headers)
