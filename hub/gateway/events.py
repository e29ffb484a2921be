"""What the gateway tells its observer (for metrics), and the one way it refuses a request."""

from __future__ import annotations

import enum
import http
from collections.abc import Callable

import attrs

from hub.http import HttpConnection

__all__ = [
    "GatewayEvent",
    "IdleClosed",
    "LimitHit",
    "ProtocolViolationClosed",
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


async def reject(
    connection: HttpConnection,
    observe: Callable[[GatewayEvent], None],
    path: str | None,
    reason: RejectReason,
    status: int,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
) -> None:
    """Refuse a request: tell the observer, and answer `status` with `message`."""
    observe(RequestRejected(reason, status, path))
    await connection.send_error(status, message, headers=headers)
