"""Who a connection is: the user it speaks for, and what its credential says.

An application's `authenticate` hook may return anything as a connection's
identity (services see it as `member.identity`). The hub's own features that
need a *user* (presence, personal topics and notifications, token grants)
read it through `user_of`:

- an `Identity` is the hub's own form (what signed tokens produce);
- a non-empty `str` is taken as the user id;
- anything else (None without a hook) is an anonymous connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Identity", "user_of"]


@attrs.frozen
class Identity:
    """An authenticated connection: its user id and what its credential carried.

    `claims` are the credential's claims as decoded (a token's payload);
    `expires_at` is when the credential runs out, in `time.time()` seconds,
    None if it never does.
    """

    user: str = attrs.field()
    claims: Mapping[str, Any] = attrs.field(factory=dict)
    expires_at: float | None = None

    @user.validator
    def _check_user(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ValueError(f"an Identity needs a non-empty user id, got {value!r}")


def user_of(identity: object) -> str | None:
    """The user id an identity speaks for, or None for an anonymous connection."""
    if isinstance(identity, Identity):
        return identity.user
    if isinstance(identity, str) and identity:
        return identity
    return None
