"""The pure core of a topic's presence: who is here, the grace of ended connections, the diffs.

No trio, no I/O: the topic's actor passes `now` in and sends what `flush`
returns. One `PresenceState` per topic:

- an **entry** is one connection's presence (one device, one tab) of one
  user: a hub-made `id`, the `gen` (generation) of the session that holds
  it, and its `meta`. A user is present while it has at least one entry.
- a **holder** is whatever the caller keys connections by (the session's
  actor ref). A holder holds at most one entry.
- when a holder's connection ends, its entry stays as a **ghost** for the
  grace period; a new connection of the same user (the same device key if
  it gives one, else any ghost of the user's) takes the entry over with a
  new generation: nobody sees it leave and come back.
- every removal names the generation it removes: a late one (for a session
  whose entry was taken over since) removes nothing.
- changes are **pending** until `flush`, which nets them per entry: an entry
  that came and went between two flushes costs nothing, one updated ten
  times is sent once with its last meta.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping

import attrs

from actors import compacted
from hub.protocol import Payload

__all__ = [
    "Claim",
    "Diff",
    "Entry",
    "NameTakenError",
    "PresenceState",
]


class NameTakenError(Exception):
    """A claim of a user name that a live connection of another identity holds."""


@attrs.frozen
class Entry:
    """One connection's presence in a topic: its id, generation and meta."""

    #: Hub-made, unique in the topic for the topic actor's life; the same
    #: across a takeover within the grace period.
    id: str
    #: The generation of the session holding the entry (higher is newer).
    gen: int
    meta: Mapping[str, Payload]

    def wire(self) -> dict[str, Payload]:
        """The entry as clients receive it."""
        return {"id": self.id, "gen": self.gen, "meta": dict(self.meta)}


@attrs.frozen
class Claim:
    """A connection's claim to be present as `user`.

    `authenticated` says the user comes from the connection's identity (the
    authenticate hook), not from a join param; `key` is the client's own
    device key (private: never sent to anyone), which lets a reconnecting
    tab take its entry over even before its old connection is known dead.
    """

    user: str
    authenticated: bool
    key: str | None = None
    meta: Mapping[str, Payload] = attrs.field(factory=dict)


@attrs.frozen
class Diff:
    """What changed between two flushes: entries added or updated, and entries gone."""

    joins: Mapping[str, tuple[Entry, ...]]
    leaves: Mapping[str, tuple[Entry, ...]]

    def wire(self) -> dict[str, Payload]:
        """The `$presence_diff` payload: `{"joins": {user: [entry]}, "leaves": {...}}`."""
        return {"joins": _wire_users(self.joins), "leaves": _wire_users(self.leaves)}


@attrs.define(eq=False)
class _Slot:
    """An entry and who holds it (None for a ghost, then `expires` says until when)."""

    user: str
    entry: Entry
    authenticated: bool
    key: str | None
    holder: Hashable | None
    expires: float = 0.0


@attrs.define
class _Change:
    """An entry changed since the last flush: what the others saw then, and its last value."""

    user: str
    #: The entry as of the last flush (None: it was not there).
    before: Entry | None
    last: Entry
    #: What someone who received the whole state since (a new member, a
    #: subscriber) saw of the entry, when `has_seen`.
    seen: Entry | None = None
    has_seen: bool = False
    #: Several saw different values: send the entry whatever it is now.
    forced: bool = False


@attrs.define(eq=False)
class PresenceState:
    """Every entry of one topic, its ghosts and its pending changes (see the module docstring)."""

    _slots: dict[str, _Slot] = attrs.Factory(dict)
    _users: dict[str, dict[str, _Slot]] = attrs.Factory(dict)
    _holders: dict[Hashable, _Slot] = attrs.Factory(dict)
    # Entry id -> ghost slot, in expiry order (the grace is the same for all).
    _ghosts: dict[str, _Slot] = attrs.Factory(dict)
    _pending: dict[str, _Change] = attrs.Factory(dict)
    _generation: int = 0
    _next_id: int = 0

    # --- reading -------------------------------------------------------------

    @property
    def user_count(self) -> int:
        """Users present (ghosts included: they are present until their grace ends)."""
        return len(self._users)

    @property
    def entry_count(self) -> int:
        return len(self._slots)

    @property
    def ghost_count(self) -> int:
        return len(self._ghosts)

    @property
    def changed(self) -> bool:
        """Whether changes wait for a flush."""
        return bool(self._pending)

    def users(self) -> Iterator[str]:
        return iter(self._users)

    def entries(self, user: str) -> tuple[Entry, ...]:
        """The entries of `user`, oldest first (empty if absent)."""
        slots = self._users.get(user)
        return () if slots is None else tuple(slot.entry for slot in slots.values())

    def entry_of(self, holder: Hashable) -> tuple[str, Entry] | None:
        """The user and entry `holder` holds, if any."""
        slot = self._holders.get(holder)
        return None if slot is None else (slot.user, slot.entry)

    def snapshot(self) -> dict[str, tuple[Entry, ...]]:
        return {user: self.entries(user) for user in self._users}

    def wire_state(self) -> dict[str, Payload]:
        """The `$presence_state` payload: `{user: [entry, ...]}`."""
        return _wire_users(self.snapshot())

    def next_expiry(self) -> float | None:
        """When the oldest ghost's grace ends (None without ghosts)."""
        for slot in self._ghosts.values():
            return slot.expires
        return None

    # --- changing ------------------------------------------------------------

    def check(self, claim: Claim) -> None:
        """Raise NameTakenError if `claim` may not be present as its user now.

        A name from a join param (not authenticated) is refused while any
        live connection holds it, unless the claim brings the device key of
        that connection's entry (the same tab, reconnecting), and while an
        authenticated user's entry (a ghost too) holds it. An authenticated
        claim is never refused: the identity is the proof, and `track`
        displaces whoever took its name from a join param.
        """
        if claim.authenticated:
            return
        slots = self._users.get(claim.user)
        if not slots:
            return
        for slot in slots.values():
            if slot.authenticated:
                raise NameTakenError(f"the user {claim.user!r} is taken")
            if slot.holder is not None and (claim.key is None or claim.key != slot.key):
                raise NameTakenError(f"the user {claim.user!r} is taken")

    def track(self, holder: Hashable, claim: Claim) -> tuple[Entry, list[Hashable]]:
        """Make `holder` present as `claim.user`; return its entry and the holders displaced.

        Takes over the user's entry with the same device key, or else the
        user's newest ghost, with a new generation; otherwise adds an entry.
        An authenticated claim displaces the entries of anyone present under
        its name from a join param (the caller ends their memberships).
        Call `check` first: this does not refuse.
        """
        self.untrack(holder, grace_until=None)
        displaced: list[Hashable] = []
        slots = self._users.get(claim.user, {})
        if claim.authenticated:
            for slot in [slot for slot in slots.values() if not slot.authenticated]:
                if slot.holder is not None:
                    displaced.append(slot.holder)
                self._remove(slot)
            slots = self._users.get(claim.user, {})
        taken = self._takeover(slots, claim.key)
        self._generation += 1
        if taken is not None:
            if taken.holder is not None:
                del self._holders[taken.holder]
            self._ghosts.pop(taken.entry.id, None)
            self._record(taken)
            taken.entry = Entry(taken.entry.id, self._generation, claim.meta)
            taken.holder = holder
            taken.key = claim.key
            self._holders[holder] = taken
            return taken.entry, displaced
        self._next_id += 1
        entry = Entry(f"e{self._next_id}", self._generation, claim.meta)
        slot = _Slot(claim.user, entry, claim.authenticated, claim.key, holder)
        self._slots[entry.id] = slot
        self._users.setdefault(claim.user, {})[entry.id] = slot
        self._holders[holder] = slot
        self._pending[entry.id] = _Change(claim.user, None, entry)
        return entry, displaced

    def update(self, holder: Hashable, meta: Mapping[str, Payload]) -> Entry | None:
        """Replace the meta of `holder`'s entry; None if it holds none."""
        slot = self._holders.get(holder)
        if slot is None:
            return None
        self._record(slot)
        slot.entry = attrs.evolve(slot.entry, meta=meta)
        return slot.entry

    def untrack(self, holder: Hashable, *, grace_until: float | None) -> Entry | None:
        """`holder`'s connection left: its entry goes now, or stays a ghost until `grace_until`.

        Returns the entry, or None if `holder` holds none (never had one, or
        its entry was taken over by a newer session: a late leave).
        """
        slot = self._holders.pop(holder, None)
        if slot is None:
            return None
        self._holders = compacted(self._holders)
        if grace_until is None:
            self.remove(slot.entry.id, slot.entry.gen)
        else:
            slot.holder = None
            slot.expires = grace_until
            self._ghosts[slot.entry.id] = slot
        return slot.entry

    def remove(self, entry_id: str, gen: int) -> bool:
        """Remove the entry `entry_id` if it is still of generation `gen`.

        A removal for an older generation (the entry was taken over since)
        removes nothing and returns False.
        """
        slot = self._slots.get(entry_id)
        if slot is None or slot.entry.gen != gen:
            return False
        self._remove(slot)
        return True

    def expire(self, now: float) -> int:
        """Remove the ghosts whose grace ended by `now`; return how many."""
        expired = 0
        while self._ghosts:
            entry_id, slot = next(iter(self._ghosts.items()))
            if slot.expires > now:
                break
            self.remove(entry_id, slot.entry.gen)
            expired += 1
        return expired

    def force(self) -> None:
        """Someone just received the whole state: a pending change must reach them too.

        The next flush then sends an entry whose value differs from what
        they saw, even where the others would see no change.
        """
        for entry_id, change in self._pending.items():
            slot = self._slots.get(entry_id)
            now = None if slot is None else slot.entry
            if not change.has_seen:
                change.seen, change.has_seen = now, True
            elif not _same(change.seen, now):
                change.forced = True

    def flush(self) -> Diff | None:
        """Net the pending changes into a Diff (None if nothing shows), and forget them."""
        if not self._pending:
            return None
        joins: dict[str, list[Entry]] = {}
        leaves: dict[str, list[Entry]] = {}
        for entry_id, change in self._pending.items():
            slot = self._slots.get(entry_id)
            final = None if slot is None else slot.entry
            # A takeover with the same meta shows nothing; its new generation
            # is sent with the entry's next change.
            if (
                _same(change.before, final)
                and not change.forced
                and (not change.has_seen or _same(change.seen, final))
            ):
                continue
            if final is None:
                leaves.setdefault(change.user, []).append(change.before or change.last)
            else:
                joins.setdefault(change.user, []).append(final)
        self._pending = {}
        if not joins and not leaves:
            return None
        return Diff(
            {user: tuple(entries) for user, entries in joins.items()},
            {user: tuple(entries) for user, entries in leaves.items()},
        )

    # --- inside --------------------------------------------------------------

    def _takeover(self, slots: Mapping[str, _Slot], key: str | None) -> _Slot | None:
        if key is not None:
            for slot in slots.values():
                if slot.key == key:
                    return slot
        ghosts = [slot for slot in slots.values() if slot.holder is None]
        if not ghosts:
            return None
        # The newest ghost: the device that dropped last is the likeliest back first.
        return max(ghosts, key=lambda slot: slot.expires)

    def _record(self, slot: _Slot) -> None:
        change = self._pending.get(slot.entry.id)
        if change is None:
            self._pending[slot.entry.id] = _Change(slot.user, slot.entry, slot.entry)
        else:
            change.last = slot.entry

    def _remove(self, slot: _Slot) -> None:
        entry_id = slot.entry.id
        self._record(slot)
        del self._slots[entry_id]
        self._ghosts.pop(entry_id, None)
        if slot.holder is not None:
            self._holders.pop(slot.holder, None)
        slots = self._users[slot.user]
        del slots[entry_id]
        if not slots:
            del self._users[slot.user]
        # After a crowd has gone, the tables give their memory back.
        self._slots = compacted(self._slots)
        self._ghosts = compacted(self._ghosts)
        self._holders = compacted(self._holders)
        self._users = compacted(self._users)


def _same(one: Entry | None, other: Entry | None) -> bool:
    """Whether clients would see no difference (the generation alone does not show)."""
    if one is None or other is None:
        return one is other
    return one.meta == other.meta


def _wire_users(users: Mapping[str, tuple[Entry, ...]]) -> dict[str, Payload]:
    return {user: [entry.wire() for entry in entries] for user, entries in users.items()}
