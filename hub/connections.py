"""A connected client as the application and the operator see it.

`Connection` is what the connection hooks get (`hub.hooks`), what the users
registry keeps (`hub.users`) and what the observer lists: the client's
session, its identity and user, when and from where it connected, the
transport it uses, the topics it has joined, and a per-connection data bag
of the application's (`connection.data`, which services see as
`member.data`).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import attrs

from hub.http import RemoteAddress
from hub.identity import user_of
from hub.logs import describe_remote, transport_kind
from hub.protocol import CloseCode

if TYPE_CHECKING:
    from hub.session import Session

__all__ = ["Connection"]


@attrs.define(eq=False, slots=True)
class Connection:
    """One connected client (see the module docstring); alive until its session ends."""

    session: Session
    #: When it connected, by trio's clock.
    since: float
    remote: RemoteAddress | None
    #: Connected on the observer's path (the observer's own views).
    observer: bool
    #: When it connected, by the wall clock (`time.time()`).
    connected_at: float = 0.0

    @property
    def id(self) -> str:
        """The connection's id, unique in this hub (`member.id` in services)."""
        return self.session.id

    @property
    def identity(self) -> object:
        """What the hub's authenticate hook returned for the client (None without one)."""
        return self.session.identity

    @property
    def user(self) -> str | None:
        """The user the client speaks for (`hub.identity.user_of`), None if anonymous."""
        return user_of(self.session.identity)

    @property
    def data(self) -> MutableMapping[str, Any]:
        """The application's own data for this connection, for its lifetime."""
        return self.session.data

    @property
    def transport(self) -> str:
        """How the client is connected: `websocket`, `memory`, ..."""
        return transport_kind(self.session.transport)

    @property
    def address(self) -> str | None:
        """The client's address as `host:port`, None when unknown."""
        return describe_remote(self.remote)

    @property
    def topics(self) -> tuple[str, ...]:
        """The topics the client has joined or is joining."""
        return self.session.topics

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """End the connection: the client gets a Close with `code` and `reason`."""
        self.session.close(code, reason)
