"""A client's copy of a topic's presence, kept from the hub's `$presence_*` pushes.

    view = PresenceView()
    room.on("$presence_state", lambda payload, offset: view.sync_state(payload))
    room.on("$presence_diff", lambda payload, offset: view.sync_diff(payload))
    view.users()          # {"ada": [{"id": "e1", "gen": 1, "meta": {...}}]}

The same rules as triohub.js's `Presence` (docs/client-js.md): a diff's
leaves remove entries by id, its joins add or replace entries by id; a user
is present while it has an entry.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from hub.protocol import Payload

__all__ = ["Change", "PresenceView"]


@attrs.frozen
class Change:
    """What one push changed, by user: who arrived, who is gone, whose entries changed."""

    joined: tuple[str, ...] = ()
    left: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()


@attrs.define
class PresenceView:
    """Users and their entries (`{"id", "gen", "meta"}` maps), as the pushes say."""

    _users: dict[str, dict[str, Mapping[str, Payload]]] = attrs.Factory(dict)
    #: The last `$presence_count` (counts mode): {"users": n, "connections": m}.
    counts: Mapping[str, Payload] = attrs.Factory(dict)

    def users(self) -> dict[str, list[Mapping[str, Payload]]]:
        return {user: list(entries.values()) for user, entries in self._users.items()}

    def __contains__(self, user: object) -> bool:
        return user in self._users

    def __len__(self) -> int:
        return len(self._users)

    def sync_state(self, payload: Payload) -> Change:
        """Replace the view with a `$presence_state` payload."""
        before = set(self._users)
        self._users = {}
        self._apply(_users_of(payload), add=True)
        after = set(self._users)
        return Change(tuple(sorted(after - before)), tuple(sorted(before - after)))

    def sync_diff(self, payload: Payload) -> Change:
        """Apply a `$presence_diff` payload: leaves first, then joins (by entry id)."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"a presence diff is a map, got {payload!r}")
        before = set(self._users)
        leaves, joins = _users_of(payload.get("leaves")), _users_of(payload.get("joins"))
        self._apply(leaves, add=False)
        self._apply(joins, add=True)
        after = set(self._users)
        updated = sorted((set(joins) | set(leaves)) & before & after)
        return Change(tuple(sorted(after - before)), tuple(sorted(before - after)), tuple(updated))

    def sync_counts(self, payload: Payload) -> None:
        """Keep a `$presence_count` payload."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"presence counts are a map, got {payload!r}")
        self.counts = dict(payload)

    def _apply(self, users: Mapping[str, list[Mapping[str, Payload]]], *, add: bool) -> None:
        for user, entries in users.items():
            held = self._users.get(user, {})
            for entry in entries:
                entry_id = str(entry.get("id"))
                if add:
                    held[entry_id] = entry
                else:
                    held.pop(entry_id, None)
            if held:
                self._users[user] = held
            else:
                self._users.pop(user, None)


def _users_of(payload: Payload) -> dict[str, list[Mapping[str, Payload]]]:
    if payload is None:
        return {}
    if not isinstance(payload, Mapping):
        raise ValueError(f"presence by user is a map, got {payload!r}")
    users: dict[str, list[Mapping[str, Payload]]] = {}
    for user, entries in payload.items():
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise ValueError(f"the entries of {user!r} are not a list of maps: {entries!r}")
        users[user] = list(entries)
    return users
