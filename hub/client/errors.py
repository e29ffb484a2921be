"""The Python client's errors: one tree, each with a `code` a program can test.

ClientError (code)
├── ReplyError            the server refused: its code (`join_refused`, `bad_field`, ...)
├── RequestTimeoutError   `timeout`: no answer in time (sent, or still waiting to be)
├── ConnectionLostError   `disconnected`: the connection dropped with the request in flight
├── ClientClosedError     `closed`: the client is closed, or gave up reconnecting
├── BufferFullError       `buffer_full`: too many requests wait for a connection
└── ConnectError          `connect_failed`: the hub could not be reached, or refused (`status`)
"""

from __future__ import annotations

from hub.errors import HubError

__all__ = [
    "BufferFullError",
    "ClientClosedError",
    "ClientError",
    "ConnectError",
    "ConnectionLostError",
    "ReplyError",
    "RequestTimeoutError",
]


class ClientError(HubError):
    """Base of the client's errors; `code` says what went wrong, machine-readably."""

    code: str = "client_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message


class ReplyError(ClientError):
    """The server answered with an error Reply or Error frame; `code` is the server's."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}", code=code)
        self.message = message


class RequestTimeoutError(ClientError):
    """No answer came in time (waiting for a connection counts); a late one is dropped."""

    code = "timeout"


class ConnectionLostError(ClientError):
    """The connection dropped while the request was in flight: it may or may not have been done.

    Requests not yet sent are kept for the next connection instead (see
    docs/client-python.md, "Buffering"); only those already on the wire
    fail with this, as the client cannot know whether the server acted.
    """

    code = "disconnected"


class ClientClosedError(ConnectionLostError):
    """The client is closed (by the application, or it stopped reconnecting: see `reason`)."""

    code = "closed"


class BufferFullError(ClientError):
    """Too many requests wait for the connection to come back (`max_buffered`)."""

    code = "buffer_full"


class ConnectError(ClientError):
    """The hub could not be reached, or refused the connection.

    `status` is the HTTP status of a refusal (401 for a bad token, 403 for
    a wrong origin, 503 while the hub is full or stopping), None when the
    hub could not be reached at all. `retry` says whether trying again
    later may help (no answer, a 5xx, or 429); the client reconnects only then.
    """

    code = "connect_failed"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def retry(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429
