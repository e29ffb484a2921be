"""Who a member plays as: its user (`member.user`), the key of its slots and tickets."""

from __future__ import annotations

import re
from typing import Final

from hub import JoinRefusedError, Member
from hub.gateway import AuthenticationError, ConnectRequest

# A player name the demo accepts from the connect URL (`?name=ada`).
NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,24}")


def player_of(member: Member) -> str:
    """The user `member` plays as; refuses an anonymous connection with code `anonymous`."""
    user = member.user
    if user is None:
        raise JoinRefusedError(
            "connect as a player (a name in ?name=, or a token) to play", code="anonymous"
        )
    return user


def name_from_query(request: ConnectRequest) -> str | None:
    """The demo's authenticate hook: the player is who `?name=` says (anonymous without one).

    A demo's trust: anyone may say any name. A real game checks a signed
    token instead (docs/auth.md), whose user the services read the same way.
    """
    name = request.query.get("name")
    if name is None:
        return None
    if not NAME.fullmatch(name):
        raise AuthenticationError("a name is 1 to 24 letters, digits, '_' or '-'")
    return name
